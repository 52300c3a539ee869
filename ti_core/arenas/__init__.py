"""Arena runners, one module each: ``replay``, ``runner`` (an imported callable, and what a
runner is), ``demo``, and one per framework (``tradingagents``, ``hedgefund``, on the adapter
base in ``framework``), each holding its adapter and its mapping to a state; ``registry`` maps
the spec forms to them (``load_arena``)."""
