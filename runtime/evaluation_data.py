"""What the tasks share to evaluate a trained run: the data's description, classes
matched by name, and the worst mistakes of a classifier."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


class EvaluateError(Exception):
    """Data that cannot be evaluated: what is wrong, and what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f"; {hint}" if hint else ""))


@dataclass
class EvaluationData:
    """Items in order, a name for each (a file, a text), and what the data is called."""

    dataset: Dataset
    names: list[str]
    described: str


def no_val():
    raise EvaluateError("the run's recipe has no val data", "give the data to measure: ftr evaluate RUN SOURCE")


def class_index(found: list[str], classes: list[str]) -> list[int]:
    """For each class of the data, its index among the run's classes; a class the run
    never learned is an error (a subset of the run's classes is fine)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in found if name not in index]
    if unknown:
        listed = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise EvaluateError(
            f"the data has {len(unknown)} class(es) the run did not learn: {listed}",
            f"the run knows {', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}",
        )
    return [index[name] for name in found]


class Relabeled(Dataset):
    """Items (input, target) with targets renumbered from the data's classes to the run's."""

    def __init__(self, base, found: list[str], classes: list[str]):
        self.base = base
        self.mapping = class_index(found, classes)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        item, target = self.base[index]
        return item, self.mapping[target]


def worst_mistakes(records: list, names: list[str], classes: list[str], worst: int) -> list[dict]:
    """Of (item indices, [logits], labels) per batch: the wrong predictions made with the
    highest probability, worst first."""
    found = []
    for indices, outputs, labels in records:
        probabilities = outputs[0].float().softmax(1).cpu()
        scores, predicted = probabilities.max(1)
        for row, (i, label) in enumerate(zip(indices, labels.tolist(), strict=True)):
            guess = int(predicted[row])
            if guess != label:
                found.append(
                    {
                        "input": names[i],
                        "label": classes[label],
                        "predicted": classes[guess],
                        "score": float(scores[row]),
                        "label_score": float(probabilities[row, label]),
                    }
                )
    found.sort(key=lambda row: -row["score"])
    return found[:worst]
