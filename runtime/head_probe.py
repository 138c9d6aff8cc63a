"""`head_init probe` (LP-FT: Kumar et al., ICLR 2022, linear probing then fine-tuning).

Before the first epoch, the new linear head is fitted by multinomial logistic
regression on the frozen backbone's features of the train images, taken through
the eval pipeline (no augmentation) and computed as the feature cache computes
them; training then follows the recipe from that head. Nothing here draws from
the global random generator, so everything after it sees the random numbers a
run without it sees: the head's starting weights are the only difference.

The fit: from zeros, full-batch L-BFGS (strong Wolfe line search, at most
ITERATIONS iterations) in float64 on the mean cross entropy plus
(1 / 2n) * ||W||^2 (n the number of images): scikit-learn's LogisticRegression
at its default C=1, bias not penalised. The compiled script does the same
(templates/_probe.py.jinja)."""

from __future__ import annotations

import torch
from torch import nn

ITERATIONS = 200


def split_head(head: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(what runs before the head's last Linear, e.g. pool-and-flatten or dropout; that Linear)."""
    if isinstance(head, nn.Linear):
        return nn.Identity(), head
    layers = list(head.children())
    return nn.Sequential(*layers[:-1]), layers[-1]


def logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (classes, d), bias (classes,)) minimising mean cross entropy + ||W||^2 / 2n."""
    x = x.to(torch.float64)
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    penalty = 0.5 / len(x)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=ITERATIONS,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight.T + bias, y) + penalty * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict:
    """Set the head's Linear to the probe fitted on (features, labels): the head's inputs.
    Returns its train loss and accuracy on them."""
    before, linear = split_head(head)
    was_training = head.training
    head.eval()
    with torch.no_grad():
        x = before(features.to(linear.weight.device, torch.float32)).flatten(1)
    y = labels.to(x.device)
    weight, bias = logistic_regression(x, y, linear.out_features)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
        logits = linear(x)
    head.train(was_training)
    return {
        "loss": nn.functional.cross_entropy(logits, y).item(),
        "accuracy": (logits.argmax(1) == y).float().mean().item(),
    }
