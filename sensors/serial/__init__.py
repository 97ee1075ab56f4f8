"""A CGM on a serial line: the wire formats (``frames``) and the threaded source (``source``)."""
