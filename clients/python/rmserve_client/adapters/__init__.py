"""Framework adapters: rmserve as the reward of an RL trainer (no torch imported here).

- ``trl``: ``RMServeReward`` / ``AsyncRMServeReward`` (GRPOTrainer ``reward_funcs``)
- ``openrlhf``: a file to pass as ``--reward.remote_url`` (``reward_func(queries, prompts, labels)``)
- ``verl``: ``compute_score`` / ``compute_score_async`` for ``custom_reward_function``
"""
