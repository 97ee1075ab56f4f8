"""Decision making: policies (baselines, MPC), safety supervisor, loop runtime.

May import ``twin``; reaches sensors and pumps only through the Protocols it
defines (DESIGN.md layering).
"""

from controller.moved_modules import install as _install_moved_modules

_install_moved_modules()  # old module paths of issue 16 keep working for one release, with a warning
