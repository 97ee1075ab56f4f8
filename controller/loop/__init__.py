"""The device loop: what runs on a Raspberry Pi (or a HIL rig) around the decision-maker.

The closed-loop cycle (``runtime``), its journal (``journal*``), the ports it
needs (``ports``), the pump's record (``pump_history*``), the configuration
(``config/``), Nightscout upload (``nightscout/``), systemd notify, and the
composition root that wires them (``live``). Sits above ``controller``,
``sensors``, ``firmware_bridge`` and ``twin``; never imports ``sim``,
simglucose, pandas or Dask.
"""
