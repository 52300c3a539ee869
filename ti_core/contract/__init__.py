"""The v1 wire contract: the envelope models, key names, hash fields, stream ids, the
serialised form, the decoder, and the bounds an arena state must keep."""
