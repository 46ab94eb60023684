"""Where catalog images and feeds come from: untrusted URIs resolved, fingerprinted and fetched."""
