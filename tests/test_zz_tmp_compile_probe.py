import pytest, torch
from utils import TASKS, train_batch

@pytest.mark.parametrize("reset", [False, True])
def test_probe(make_policy, reset):
    def step(policy):
        policy.train()
        batch = train_batch(policy.config, batch_size=3, seed=5)
        batch["task"] = [TASKS[0], TASKS[1], TASKS[0]]
        loss, info = policy.forward(batch, noise=policy.draw_noise(3, generator=torch.Generator().manual_seed(1)))
        loss.backward()
        return info
    eager = make_policy(action_dropout=0.0, gradient_checkpointing=True)
    compiled = make_policy(action_dropout=0.0, gradient_checkpointing=True, compile_model=True)
    compiled.load_state_dict(eager.state_dict())
    step(eager)
    from torch._dynamo.utils import counters
    if reset:
        torch._dynamo.reset()
    counters.clear()
    step(compiled)
    print("graphs", counters["stats"]["unique_graphs"])
