"""Host <-> pump wire protocol, transports, and the reference virtual pump firmware.

A leaf package: never imports other glucotwin packages.
"""
