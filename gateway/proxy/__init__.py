"""The WeChat-compatible proxy (``/wx``): who may call what with which token, and byte-for-byte forwarding."""
