"""The etcd backend of skyge-lock (lock.cfg `backend = "etcd"`): keys.py (layout, waiter order),
client.py (etcd calls), engine.py (sessions over etcd), server.py (the Lock servicer), app.py."""
