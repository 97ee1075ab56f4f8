"""CGM files as people export them: format detection and dispatch (``read``), one module per format, and the helpers they share (``common``)."""
