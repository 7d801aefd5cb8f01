"""The operator console at /console: adapters, versions, feedback over time, runs, and the admin actions."""
