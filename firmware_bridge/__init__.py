"""Host <-> pump wire protocol, transports, and the reference virtual pump firmware.

A leaf package: never imports other glucotwin packages. Importing it is cheap:
paho-mqtt and pyserial are imported only by ``mqtt_transport`` and
``serial_transport``.

Modules
-------
framing          COBS + CRC-16/CCITT-FALSE frames on byte streams, ``FrameReader``
protocol         the message layouts, a package (``protocol/__init__.py`` lists its modules and
                 re-exports them): ``Command`` / ``Ack`` / ``Nak`` / ``PumpStatus``, HMAC tags,
                 ``decode_reply``; ``protocol.history``: HISTORY and ``PumpHistory``
virtual_pump     ``PumpSettings``, ``VirtualPump``: the pump firmware as a pure state machine
pump_link        ``PumpLink``: send with retries, settle lost replies from the status ring
transport        the ``Transport`` protocol and ``TransportError``
serial_transport ``SerialTransport`` (pyserial)
mqtt_transport   ``MqttTransport``, ``BrokerConfig`` (paho-mqtt 2, MQTT v5)
pump_device      ``python -m firmware_bridge.pump_device``: the pump as a process
hil_clock        ``HilClock``: the pump's lockstep HIL clock over MQTT (``pump_device --hil-broker``)
examples         the example messages of PROTOCOL.md

``PROTOCOL.md`` specifies the wire protocol for firmware authors.
"""
