"""Envelope -> Redis: the publish scripts (entry and hash in one atomic step), publish_many,
and the outcome of a decision."""
