"""The Redis seam: the client protocol, connections (URL, Sentinel, embedded), the error
boundary, replica acknowledgement, reply shapes and retries."""
