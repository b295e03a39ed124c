"""abflow's reaches into upstream packages beyond their public interfaces: one module per
package, each checked by tests/test_upstream.py (docs/upstream.md)."""
