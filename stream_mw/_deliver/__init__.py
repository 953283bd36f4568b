"""Ways of delivering a response other than the HTTP request that asked for it."""
