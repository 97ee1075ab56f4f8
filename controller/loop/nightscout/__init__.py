"""Uploading the loop's journal to Nightscout: the pure mapping to Nightscout documents (``docs``) and the outbox with its HTTP client (``uploader``)."""
