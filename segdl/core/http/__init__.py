"""HTTP transports behind one interface: requests, and lean kept-alive http.client connections."""
