"""Glucose readings: the reading type, validation, and sources (MQTT, serial, files).

A leaf package: never imports other glucotwin packages.
"""
