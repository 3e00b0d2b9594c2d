"""Serial link to the vehicle-bus microcontroller, exposed as a python-can bus (issue 3)."""
