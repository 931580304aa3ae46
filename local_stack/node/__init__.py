"""The process node's parts: pure functions (env, status, IPs, probes' bookkeeping) and runners.

`local_stack.process_node` puts them together into the kubelet stand-in.
"""
