"""Arena runners: the spec parser, the framework adapters (TradingAgents, ai-hedge-fund)
and their mappings to a state."""
