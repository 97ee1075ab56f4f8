"""Decision making: policies (baselines, MPC), safety supervisor, loop runtime.

May import ``twin``; reaches sensors and pumps only through the Protocols it
defines (DESIGN.md layering).
"""
