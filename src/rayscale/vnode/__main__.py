"""``python -m rayscale.vnode``: the same as ``rayscale vnode --kubeconfig PATH``."""

from rayscale.vnode.main import main

if __name__ == "__main__":
    main()
