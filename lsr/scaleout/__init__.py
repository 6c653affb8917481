"""Scale-out on Ray: indexing jobs on Ray Data (`lsr.scaleout.ray_indexing`); sharded search
on Ray Serve lives in ``service.ray_serve``. Ray is imported only by these modules."""
