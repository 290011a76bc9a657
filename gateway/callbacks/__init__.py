"""What WeChat pushes: component events, user messages at the message URL, and the release test."""
