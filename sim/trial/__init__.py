"""The simglucose trial harness: protocol, cohort and profiles, controllers by name, the adapter between U/min and pump units, the runner, traces, metrics and ``summary.json``.

Everything here imports simglucose (or pandas) freely; nothing on the device's path imports it.
"""
