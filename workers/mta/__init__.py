"""Mail providers ("MTAs"): one module each, all behind :class:`workers.mta.base.Provider`."""
