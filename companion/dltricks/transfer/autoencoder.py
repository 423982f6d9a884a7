"""Autoencoder pretraining: learn an encoder from unlabeled images, keep it, drop the decoder.

Labels are expensive, images are cheap. An autoencoder :math:`g(f(x)) \\approx x` trained on every image
available, labeled or not, forces the encoder :math:`f` to keep what is needed to rebuild the image in a
small code; that code is then a starting point (frozen features or initial weights) for a classifier trained
on the few labeled images (Hinton & Salakhutdinov 2006; Bengio et al. 2007 for greedy layer-wise
pretraining; Géron 2022, ch. 17, sets it as an exercise).

References:
    Hinton, G. E. and Salakhutdinov, R. R. (2006), "Reducing the dimensionality of data with neural
    networks", Science 313(5786).
    Bengio, Y. et al. (2007), "Greedy layer-wise training of deep networks", NeurIPS 19.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks.batches import TensorBatches
from dltricks.train import History, fit


class Autoencoder(nn.Module):
    """``decoder(encoder(x))``: ``(N, *shape) -> (N, D) -> (N, *shape)``; the decoder restores the shape.

    Raises:
        TypeError: if ``encoder`` or ``decoder`` is not a module.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        check_type("encoder", encoder, nn.Module, "a torch.nn.Module")
        check_type("decoder", decoder, nn.Module, "a torch.nn.Module")
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def pretrain_autoencoder(
    encoder: nn.Module,
    decoder: nn.Module,
    images: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, History]:
    """Train ``decoder(encoder(x))`` to reconstruct ``images`` (mean squared error, Adam); return the encoder.

    The encoder is trained in place and returned with the reconstruction history (``history["loss"]``, the
    mean squared error per epoch); the decoder is discarded by the caller.

    Args:
        encoder: maps ``(N, *shape)`` to codes ``(N, D)``.
        decoder: maps codes back to ``(N, *shape)``.
        images: unlabeled inputs ``(N, *shape)``, on ``device`` or the CPU.
        epochs: passes over ``images``, >= 1.
        lr: Adam's learning rate, > 0.
        batch_size: images per step, >= 1.
        seed: seed of the data order.
        device: where to train.

    Raises:
        TypeError: if ``images`` is not a tensor or a module argument is not a module.
        ValueError: if ``epochs``, ``lr`` or ``batch_size`` is out of range, or the decoder does not give
            back the input's shape.
    """
    check_type("images", images, torch.Tensor, "a torch.Tensor of unlabeled inputs")
    epochs = check_int("epochs", epochs, minimum=1)
    lr = check_float("lr", lr, minimum=0.0, min_inclusive=False)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    model = Autoencoder(encoder, decoder).to(device)
    images = images.to(device)
    with torch.no_grad():
        out = model(images[:2])
    if out.shape != images[:2].shape:
        fail("decoder", f"a module whose output has the input's shape {tuple(images.shape[1:])}",
             tuple(out.shape[1:]))  # fmt: skip
    batches = TensorBatches(images, images, batch_size, seed=seed)  # the target is the input itself
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = fit(model, batches, optimizer, epochs=epochs, loss_fn=nn.functional.mse_loss, metrics={},
                  device=device)  # fmt: skip
    return encoder, history
