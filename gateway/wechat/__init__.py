"""WeChat's APIs as the gateway calls them: the pooled client, the routing table, circuit breakers."""
