"""The listener: the wire format, connections (bytes in, one Received out), the server, finalize, events."""
