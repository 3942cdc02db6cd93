"""The pure core of shelf: aggregates, lifecycle rules, process-manager decisions, ports."""
