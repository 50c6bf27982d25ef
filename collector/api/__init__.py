"""The query API (``/api/v1``): one router per resource."""
