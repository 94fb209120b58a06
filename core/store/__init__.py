"""MongoDB persistence: mongoengine documents and the repository functions around them."""
