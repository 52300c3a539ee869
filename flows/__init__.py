"""The Prefect layer and the ``ti`` command.

``flows.pipeline`` holds the flows (``publish_decision``, ``daily``), ``flows.tasks`` their
tasks, ``flows.artifacts`` and ``flows.events`` what a run leaves behind, and ``flows.cli``
the console script. Importing this package does not import Prefect; its modules do.
"""
