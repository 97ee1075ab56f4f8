"""Nightscout on the wire: single objects (``entry``) and a Nightscout REST API v1 receiver.

- :mod:`sensors.nightscout.entry`: one CGM entry or carb treatment to a
  reading or announcement and back (shared with the MQTT source)
- :mod:`sensors.nightscout.receiver`: :class:`~sensors.nightscout.receiver.NightscoutReceiver`,
  the glucose source xDrip+ and other Nightscout uploaders feed; built from
  :mod:`~sensors.nightscout.store` (stored documents, de-duplication, what
  reaches the loop), :mod:`~sensors.nightscout.auth` (the API secret and the
  lockout after wrong ones), :mod:`~sensors.nightscout.handler` (routes, bodies),
  :mod:`~sensors.nightscout.server` (bounded pool, connection cap),
  :mod:`~sensors.nightscout.deadline` (one deadline per request) and
  :mod:`~sensors.nightscout.tls` (HTTPS and the plain-HTTP warning)

Importing this package loads nothing: ``import sensors`` pulls in ``entry`` only,
the receiver's HTTP server is loaded by whoever imports ``receiver``.
"""
