"""The keys of a group, as docs/error-groups.md gives them: what GroupBook.groups() and the
durable log's list_groups() both return, and what the dashboard serves under view()["groups"]."""

SHAPE_KEYS = frozenset(
    {
        "fingerprint",
        "message",
        "error_type",
        "count",
        "first_seen",
        "last_seen",
        "severities",
        "components",
        "instances",
        "releases",
        "environments",
        "series",
        "series_start",
        "status",
        "new",
        "regression",
        "last_event",
    }
)
