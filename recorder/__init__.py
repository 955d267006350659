"""The appliance: configuration, the pipeline capture -> decode -> store, (later) the live daemon."""
