"""The one transport under the three planes (errors, health, relay).

- :mod:`.urls`: which Redis a URL names (single, Sentinel, Cluster, the embedded ``memory://``);
- :mod:`.clients`: a client for such a URL, and what we ask of it whatever the topology;
- :mod:`.wire`: how a batch of messages is written to the right server(s);
- :mod:`.pubsub`: PubSub objects for every topology, and a fast reader of replies;
- :mod:`.outgoing`: the items the planes queue;
- :mod:`.publisher`: the bounded queue and the thread that publishes from it;
- :mod:`.subscription`: the thread that keeps one PubSub subscribed whatever Redis does.
"""

from .clients import connect
from .outgoing import Dropped, Outgoing
from .publisher import Published, Publisher
from .subscription import Subscription

__all__ = ["Dropped", "Outgoing", "Published", "Publisher", "Subscription", "connect"]
