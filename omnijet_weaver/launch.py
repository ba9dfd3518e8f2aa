"""``torchrun ... -m omnijet_weaver.launch --backend nccl|gloo <weaver options>``: weaver's ``weaver`` command,
fixed for multi-node and CPU torchrun jobs (the launcher lives in :mod:`omnijet_weaver.weaver.launch`)."""

from .weaver.launch import main

if __name__ == "__main__":
    main()
