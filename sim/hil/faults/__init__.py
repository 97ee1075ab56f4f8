"""The fault campaign: one HIL patient run while everything that can break, breaks; the fault-injecting serial relay, operator mistakes, and the rogue host that hammers the pump."""
