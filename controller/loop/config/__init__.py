"""The live loop's TOML configuration: the settings (``live_config``), every key's type and hard range (``ranges``), and the checks against the machine before anything connects (``preflight``)."""
