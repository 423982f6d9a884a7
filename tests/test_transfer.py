"""dltricks.transfer: freezing (batch norm included), layer-wise rates, cutting, new heads, autoencoders;
and the Keras counterparts (clone_model + set_weights, trainable=False, frozen BatchNormalization)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.train import fit
from dltricks.transfer import (
    FeatureExtractor,
    discriminative_rates,
    embed,
    freeze,
    is_frozen_batchnorm,
    param_groups,
    parametrized_children,
    pretrain_autoencoder,
    replace_head,
    set_trainable,
    stateful_children,
    trainable_parameters,
    trainable_summary,
    unfreeze,
)
from dltricks.transfer.autoencoder import Autoencoder

HAVE_TF = importlib.util.find_spec("tensorflow") is not None


def bn_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def data(n: int = 64, seed: int = 0, shift: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g) + shift, torch.randint(0, 3, (n,), generator=g)


def train_steps(model, params, steps=5, shift=0.0):
    x, y = data(shift=shift)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    fit(model, TensorBatches(x, y, 16), opt, epochs=max(1, steps // 4), progress=False)
    return opt


def test_frozen_parameters_are_bitwise_unchanged_and_have_no_optimizer_state():
    model = bn_mlp()
    names = freeze(model, depth=2)  # Linear(12, 8) and its BatchNorm
    assert names == ["1", "2"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = train_steps(model, model.parameters(), steps=8, shift=3.0)
    after = model.state_dict()
    for key in ("1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["4.weight"], after["4.weight"])  # the rest trained
    frozen = {id(p) for p in model[1].parameters()} | {id(p) for p in model[2].parameters()}
    assert not any(id(p) in frozen for p in opt.state), "no momentum buffers for frozen parameters"
    assert all("momentum_buffer" in opt.state[p] for p in model[4].parameters())


def test_pytorch_alone_moves_the_running_statistics_of_a_frozen_batchnorm():
    model = bn_mlp()
    freeze(model, depth=2, freeze_batchnorm_stats=False)  # requires_grad only: the pitfall
    mean = model[2].running_mean.clone()
    train_steps(model, trainable_parameters(model), shift=3.0)
    assert not torch.equal(mean, model[2].running_mean)
    assert torch.equal(model[1].weight, bn_mlp()[1].weight)  # the weights themselves did not move


def test_frozen_batchnorm_stays_in_eval_mode_and_unfreezing_releases_it():
    model = bn_mlp()
    freeze(model, names="2")
    assert is_frozen_batchnorm(model[2])
    model.train()
    x, _ = data()
    model(x)
    assert not model[2].training  # put back into evaluation mode at the call
    unfreeze(model, names="2", train_batchnorm_stats=True)
    assert not is_frozen_batchnorm(model[2])
    assert model[2].training  # the flag agrees with the module at once, not at the next model.train()
    mean = model[2].running_mean.clone()
    model(x + 3)
    assert model[2].training and not torch.equal(mean, model[2].running_mean)


def test_trainable_summary_counts_parameters():
    model = bn_mlp()
    freeze(model, depth=2)
    s = trainable_summary(model)
    assert s.frozen == 12 * 8 + 8 + 8 + 8
    assert s.trainable == 8 * 8 + 8 + 8 * 3 + 3
    assert [r.name for r in s.rows] == [str(i) for i in range(7)]
    assert "(eval)" in s.rows[2].kind and "frozen: 120" in str(s)


def test_param_groups_carry_the_rates_and_leave_out_frozen_parameters():
    model = bn_mlp()
    freeze(model, depth=1)
    groups = param_groups(model, {"2": 1e-4, "4": 1e-3}, lr=1e-2)
    assert [(g["name"], g["lr"]) for g in groups] == [("2", 1e-4), ("4", 1e-3), ("6", 1e-2)]
    opt = torch.optim.SGD(groups, lr=1e-2)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3, 1e-2]
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    everything = param_groups(model, {}, lr=0.1, trainable_only=False)
    assert sum(len(g["params"]) for g in everything) == len(list(model.parameters()))


def test_discriminative_rates_shrink_by_the_factor_per_layer_from_the_head():
    rates = discriminative_rates(bn_mlp(), 1e-2, decay=0.5)
    assert list(rates) == ["1", "2", "4", "6"]
    np.testing.assert_allclose(list(rates.values()), [1.25e-3, 2.5e-3, 5e-3, 1e-2])


def test_the_cut_network_returns_the_intermediate_activations():
    model = bn_mlp().eval()
    x, _ = data()
    seen = {}
    handles = [
        model[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in (3, 5)
    ]
    model(x)
    for h in handles:
        h.remove()
    for layer in ("3", "5"):
        cut = FeatureExtractor(model, layer)
        assert isinstance(cut.body, nn.Sequential)  # a real cut: the slice model[:i+1]
        torch.testing.assert_close(cut(x), seen[int(layer)], rtol=0, atol=0)
    # In batches of 7 the matrix products are blocked differently: equal up to float32 rounding.
    torch.testing.assert_close(
        embed(FeatureExtractor(model, "5"), x, batch_size=7), seen[5], rtol=1e-5, atol=1e-6
    )


class Nested(nn.Module):
    """Not a Sequential: the extractor must cut it with a hook."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.head = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_the_extractor_cuts_any_module_by_a_dotted_name():
    torch.manual_seed(0)
    model = Nested().eval()
    x = torch.randn(5, 1, 8, 8)
    expected = model.features[:2](x)
    cut = FeatureExtractor(model, "features.1", flatten=False)
    torch.testing.assert_close(cut(x), expected, rtol=0, atol=0)
    assert FeatureExtractor(model, "features").forward(x).shape == (5, 64)


def test_replace_head_copies_the_body_and_leaves_the_original_alone():
    model = bn_mlp()
    new = replace_head(model, 5)
    assert new[6].out_features == 5 and model[6].out_features == 3
    assert torch.equal(new[1].weight, model[1].weight) and new[1].weight is not model[1].weight
    nested = replace_head(Nested(), 7, head="head")
    assert nested.head.out_features == 7


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda m: freeze(m, names="9"), ValueError, r"`names` must be .*Received: names='9'"),
        (lambda m: freeze(m, names=[1]), TypeError, r"`names` must be"),
        (
            lambda m: freeze(m, depth=5),
            ValueError,
            r"`depth` must be an integer in \[0, 4\]\. Received: depth=5",
        ),
        (lambda m: freeze(m, depth=-1), ValueError, r"`depth` must be .*Received: depth=-1"),
        (lambda m: freeze(m), ValueError, r"`names` must be given, or else `depth`"),
        (lambda m: freeze(m, names="1", depth=1), ValueError, r"`names` must be given, or else `depth`"),
        (lambda m: FeatureExtractor(m, "nope"), ValueError, r"`layer` must be .*Received: layer='nope'"),
        (lambda m: replace_head(m, 0), ValueError, r"`num_classes` must be .*Received: num_classes=0"),
        (lambda m: replace_head(m, 2, head="2"), ValueError, r"`head` must be .*Received: head='2'"),
        (lambda m: param_groups(m, {"x": 0.1}, lr=0.1), ValueError, r"`rates` must be .*Received: rates='x'"),
        (lambda m: param_groups(m, {"1": -1.0}, lr=0.1), ValueError, r"`rates\['1'\]` must be"),
        (lambda m: discriminative_rates(m, 0.1, decay=0.0), ValueError, r"`decay` must be"),
        (lambda m: freeze("model", depth=1), TypeError, r"`model` must be a torch.nn.Module"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(bn_mlp())


def test_autoencoder_pretraining_lowers_the_reconstruction_error_and_returns_the_encoder():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4) @ torch.randn(4, 4) * 0.5  # structured: rows are mixtures of 4 patterns
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    decoder = nn.Sequential(nn.Linear(4, 16), nn.Unflatten(1, (1, 4, 4)))
    enc, hist = pretrain_autoencoder(encoder, decoder, x, epochs=20, lr=1e-2, batch_size=32)
    assert enc is encoder and hist["loss"][-1] < 0.5 * hist["loss"][0]
    with pytest.raises(ValueError, match=r"`decoder` must be a module whose output has the input's shape"):
        pretrain_autoencoder(encoder, nn.Linear(4, 3), x, epochs=1)
    with pytest.raises(ValueError, match=r"`epochs` must be .*Received: epochs=0"):
        pretrain_autoencoder(encoder, decoder, x, epochs=0)


# --- Keras counterparts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    if not HAVE_TF:
        pytest.skip("TensorFlow is not installed")
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def keras_model(keras, bn=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((12,)), keras.layers.Dense(8, activation="relu")]
    layers += [keras.layers.BatchNormalization()] if bn else []
    layers += [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    return keras.Sequential(layers)


@pytest.mark.keras
def test_keras_clone_model_and_set_weights_copy_exactly_and_independently(keras):
    a = keras_model(keras)
    clone = keras.models.clone_model(a)
    clone.set_weights(a.get_weights())
    for wa, wc in zip(a.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(wa, wc)
    x = np.random.default_rng(0).normal(size=(16, 12)).astype("float32")
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(clone(x)))
    clone.layers[0].kernel.assign(clone.layers[0].kernel + 1.0)  # the clone owns its variables
    assert not np.array_equal(a.layers[0].get_weights()[0], clone.layers[0].get_weights()[0])


@pytest.mark.keras
def test_keras_trainable_false_freezes_and_recompiling_after_unfreezing_trains_again(keras):
    model = keras_model(keras)
    x = np.random.default_rng(0).normal(3.0, 1.0, size=(64, 12)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=64)
    for layer in model.layers[:-1]:
        layer.trainable = False
    assert len(model.trainable_weights) == 2  # the head's kernel and bias
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = model.get_weights()
    frozen = len(before) - 2  # everything but the head, BatchNormalization's moving statistics included
    for b, a in zip(before[:frozen], after[:frozen]):
        np.testing.assert_array_equal(b, a)
    assert not np.array_equal(before[-2], after[-2])
    for layer in model.layers:
        layer.trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(before[0], model.get_weights()[0])


@pytest.mark.keras
def test_frozen_batchnorm_behaves_as_in_keras(keras):
    """A non-trainable Keras BatchNormalization runs in inference mode; our freeze does the same."""
    kbn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
    tbn = nn.BatchNorm1d(4, eps=1e-5, momentum=0.1)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(32, 4)).astype("float32")
    kbn.build((None, 4))
    kbn.set_weights([w.detach().numpy() for w in (tbn.weight, tbn.bias, tbn.running_mean, tbn.running_var)])
    kbn.trainable = False
    holder = nn.Sequential(tbn)
    freeze(holder, names="0")
    holder.train()
    k_out = np.asarray(kbn(x, training=True))  # training=True, yet inference mode: trainable=False wins
    t_out = holder(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(t_out, k_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t_out, x / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)  # running stats 0 and 1
    np.testing.assert_array_equal(np.asarray(kbn.moving_mean), tbn.running_mean.numpy())  # neither moved


# --- issue 25: modes, optimizer groups, the cut's parameters ----------------------------------------------


def test_unfreeze_keeps_batchnorm_in_inference_mode_by_default_as_keras_advises():
    """keras.io/guides/transfer_learning: keep BatchNormalization in inference mode when fine-tuning."""
    model = bn_mlp()
    freeze(model, depth=2)
    assert not model[2].training  # frozen: inference mode at once, before any forward
    unfreeze(model, depth=2)
    assert model[1].weight.requires_grad and model[2].weight.requires_grad  # gamma and beta train
    assert is_frozen_batchnorm(model[2]) and not model[2].training
    mean = model[2].running_mean.clone()
    model.train()
    model(data()[0] + 3)
    assert torch.equal(mean, model[2].running_mean)  # the statistics did not move
    model.eval()
    unfreeze(model, depth=2, train_batchnorm_stats=True)
    assert not model[2].training and not is_frozen_batchnorm(model[2])  # the caller's mode: eval


def test_depth_counts_layers_with_buffers_so_an_affine_free_batchnorm_is_frozen_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 8), nn.Linear(8, 3))
    assert freeze(model, depth=3) == ["0", "1", "2"]
    mean = model[1].running_mean.clone()
    model.train()
    model(data()[0] + 3)
    assert torch.equal(mean, model[1].running_mean)


class Token(nn.Module):
    """Parameters on the root (a class token), and a head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))
        self.embed = nn.Linear(4, 4, bias=False)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, x):
        return self.head(self.mid(self.embed(x + self.cls)))


def test_param_groups_hold_every_trainable_parameter_exactly_once_and_name_them():
    model = Token()
    groups = param_groups(model, {"embed": 1e-3}, lr=1e-2)
    held = [p for g in groups for p in g["params"]]
    assert len(held) == len({id(p) for p in held}) == len(list(model.parameters()))
    assert [(g["name"], g["param_names"], g["lr"]) for g in groups] == [
        ("", ["cls"], 1e-2),
        ("embed", ["embed.weight"], 1e-3),
        ("mid", ["mid.weight", "mid.bias"], 1e-2),
    ]
    opt = torch.optim.SGD(groups, lr=1e-2)  # torch accepts it: no parameter in two groups
    model(torch.randn(2, 4)).sum().backward()
    before = model.cls.detach().clone()
    opt.step()
    assert not torch.equal(before, model.cls)  # the class token moves


def test_unfreeze_with_the_optimizer_adds_the_new_parameters_as_a_group():
    model = bn_mlp()
    freeze(model, depth=2)
    opt = torch.optim.SGD(param_groups(model, {}, lr=0.1), lr=0.1)
    assert unfreeze(model, depth=2, optimizer=opt, lr=0.01) == ["1", "2"]
    last = opt.param_groups[-1]
    assert last["name"] == "unfrozen" and last["lr"] == 0.01
    assert last["param_names"] == ["1.weight", "1.bias", "2.weight", "2.bias"]
    before = model[1].weight.detach().clone()
    x, y = data()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(before, model[1].weight)
    unfreeze(model, depth=2, optimizer=opt)  # nothing new: no empty or duplicate group
    assert len(opt.param_groups) == 3  # the layers 4 and 6, and the unfrozen ones


def test_unfreeze_after_the_optimizer_warns_naming_the_parameters_that_would_stay_put():
    model = bn_mlp()
    freeze(model, depth=1)
    opt = torch.optim.SGD(trainable_parameters(model), lr=0.1)
    unfreeze(model, depth=1)
    x, y = data()
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.warns(UserWarning, match=r"\['1.weight', '1.bias'\] trainable.*optimizer="):
        opt.step()
    other = bn_mlp()
    freeze(other, depth=1)
    unfreeze(other, depth=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.optim.SGD(other.parameters(), lr=0.1).step()  # built after unfreezing: no warning


def test_embed_and_teacher_logits_restore_every_submodules_mode():
    from dltricks.distill import teacher_logits

    model = bn_mlp().eval()
    cut = FeatureExtractor(model, "5")
    x, _ = data()
    embed(cut, x)
    assert not any(m.training for m in model.modules())  # stayed in evaluation mode
    model.train()
    model[2].eval()  # a mixed state: one layer in eval mode
    embed(cut, x)
    teacher_logits(model, x)
    assert [m.training for m in model.modules()] == [True, True, True, False, True, True, True, True]


def test_a_hooked_cut_holds_only_the_layers_below_it_and_each_gets_a_gradient():
    torch.manual_seed(0)
    model = Nested()
    x = torch.randn(5, 1, 8, 8)
    cut = FeatureExtractor(model, "features.1", example=x)
    below = sum(p.numel() for p in model.features[0].parameters())
    assert sum(p.numel() for p in cut.parameters()) == below
    cut(x).sum().backward()
    assert all(p.grad is not None for p in cut.parameters())
    lazy = FeatureExtractor(Nested(), "features.2")
    assert list(lazy.parameters()) == []  # known after the first call
    lazy(x)
    assert (
        sum(p.numel() for p in lazy.parameters())
        == 2 * below + sum(p.numel() for p in lazy.body.features[2].parameters()) - below
    )


# --- defaults, input checks and edge cases pinned (mutation testing) ----------------------------------------


def test_rates_defaults_and_checks():
    rates = discriminative_rates(bn_mlp(), 1.0)
    np.testing.assert_allclose(list(rates.values()), [2.6**-3, 2.6**-2, 2.6**-1, 1.0])
    assert list(discriminative_rates(bn_mlp(), 0.5, decay=1.0).values()) == [0.5] * 4  # decay 1 allowed
    with pytest.raises(ValueError, match=r"`lr` must be .*Received: lr=0"):
        discriminative_rates(bn_mlp(), 0)
    with pytest.raises(ValueError, match=r"`model` must be a module with parametrized children"):
        discriminative_rates(nn.Sequential(nn.ReLU()), 0.1)
    with pytest.raises(ValueError, match=r"`lr` must be .*Received: lr=-1"):
        param_groups(bn_mlp(), {}, lr=-1)
    with pytest.raises(TypeError, match=r"`rates` must be a mapping"):
        param_groups(bn_mlp(), [("1", 0.1)], lr=0.1)
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module"):
        param_groups("net", {}, lr=0.1)
    model = bn_mlp()
    freeze(model, depth=1)
    assert [g["name"] for g in param_groups(model, {}, lr=0.1)] == ["2", "4", "6"]  # trainable_only default
    assert param_groups(model, {"": 0.5}, lr=0.1)[0]["lr"] == 0.1  # "" accepted; no root group here
    token = param_groups(Token(), {"": 0.5}, lr=0.1)
    assert (token[0]["name"], token[0]["lr"]) == ("", 0.5)


def test_cut_defaults_and_checks():
    model = bn_mlp().eval()
    x, _ = data()
    sizes = []
    model[1].register_forward_hook(lambda m, a, out: sizes.append(a[0].shape[0]))
    assert embed(FeatureExtractor(model, "1"), torch.cat([x] * 20)).shape == (1280, 8)
    assert sizes == [1024, 256]  # embed's default batch
    with pytest.raises(ValueError, match=r"`batch_size` must be .*Received: batch_size=0"):
        embed(FeatureExtractor(model, "1"), x, batch_size=0)
    with pytest.raises(TypeError, match="`extractor`"):
        embed("cut", x)
    with pytest.raises(TypeError, match="`x`"):
        embed(FeatureExtractor(model, "1"), "x")
    with pytest.raises(TypeError, match="`model`"):
        FeatureExtractor("net", "1")
    with pytest.raises(TypeError, match="`layer`"):
        FeatureExtractor(model, 1)
    with pytest.raises(ValueError, match="`layer`"):
        FeatureExtractor(model, "")
    with pytest.raises(TypeError, match="`example`"):
        FeatureExtractor(Nested(), "features.1", example=[1.0])
    images = torch.randn(3, 1, 8, 8)
    assert FeatureExtractor(Nested(), "features.1")(images).shape == (3, 4 * 6 * 6)  # flatten by default
    assert FeatureExtractor(Nested(), "features.1", flatten=False)(images).shape == (3, 4, 6, 6)
    assert FeatureExtractor(bn_mlp().eval(), "0", flatten=False)(torch.randn(2, 3, 4)).shape == (2, 12)


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x)


def test_a_layer_the_forward_never_calls_is_an_error():
    with pytest.raises(RuntimeError, match="layer 'b' was not called"):
        FeatureExtractor(Unused(), "b")(torch.randn(1, 2))


def test_the_extractor_moves_the_whole_model_and_takes_its_mode():
    model = Nested().eval()
    cut = FeatureExtractor(model, "features.2")
    assert not cut.training
    cut.double()
    assert model.head.weight.dtype == torch.float64 and model.features[0].weight.dtype == torch.float64
    assert cut(torch.randn(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64
    assert FeatureExtractor(bn_mlp().train(), "1").training


def test_replace_head_in_place_keeps_bias_setting_and_dtype():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)).double()
    same = replace_head(model, 6, copy_model=False)
    assert same is model and model[2].out_features == 6
    assert model[2].bias is None and model[2].weight.dtype == torch.float64
    assert replace_head(Nested(), 3).head.out_features == 3  # the last Linear by default
    with pytest.raises(ValueError, match="`model` must be a network with an nn.Linear output layer"):
        replace_head(nn.Sequential(nn.ReLU()), 2)
    with pytest.raises(TypeError, match="`model`"):
        replace_head("net", 2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: discriminative_rates(nn.Sequential(nn.ReLU()), 0.1),
         "`model` must be a module with parametrized children. Received: model='Sequential'"),
        (lambda: discriminative_rates(bn_mlp(), 0.1, decay=1.5),
         "`decay` must be a real number in (0, 1]. Received: decay=1.5"),
        (lambda: param_groups(bn_mlp(), {}, lr=0), "`lr` must be a real number in (0, inf). Received: lr=0"),
        (lambda: param_groups(nn.Sequential(nn.Linear(2, 2)), {"x": 0.1}, lr=0.1),
         "`rates` must be keyed by names of children of `model` (['0']) or ''. Received: rates='x'"),
        (lambda: param_groups(nn.Sequential(nn.Linear(2, 2)), {"0": 0}, lr=0.1),
         "`rates['0']` must be a real number in (0, inf). Received: rates['0']=0"),
    ],
)  # fmt: skip
def test_rates_refusals_word_for_word(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_param_groups_of_nested_children_go_to_the_direct_child():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))), nn.Linear(2, 1))
    groups = param_groups(model, {"0": 0.01}, lr=0.1)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("0", 0.01, 4), ("1", 0.1, 2)]
    assert groups[0]["param_names"] == ["0.0.weight", "0.0.bias", "0.1.0.weight", "0.1.0.bias"]


# --- cut.py pinned by mutation testing (issue 25, section 4) -----------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: FeatureExtractor("net", "1"), TypeError,
         "`model` must be a torch.nn.Module. Received: model='net'"),
        (lambda: FeatureExtractor(bn_mlp(), 1), TypeError,
         "`layer` must be a string (a submodule's name). Received: layer=1"),
        (lambda: FeatureExtractor(Nested(), "features.1", example=[1.0]), TypeError,
         "`example` must be a torch.Tensor (an input batch) or None. Received: example=[1.0]"),
        (lambda: FeatureExtractor(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "nope"), ValueError,
         "`layer` must be the name of a submodule of `model` (its children: ['0', '1'])."
         " Received: layer='nope'"),
        (lambda: replace_head("net", 2), TypeError,
         "`model` must be a torch.nn.Module. Received: model='net'"),
        (lambda: replace_head(nn.Sequential(nn.ReLU()), 2), ValueError,
         "`model` must be a network with an nn.Linear output layer. Received: model='Sequential'"),
        (lambda: replace_head(bn_mlp(), 2, head="2"), ValueError,
         "`head` must be the name of an nn.Linear in `model` (one of ['1', '4', '6']). Received: head='2'"),
        (lambda: replace_head(bn_mlp(), 0), ValueError,
         "`num_classes` must be an integer >= 1. Received: num_classes=0"),
    ],
)  # fmt: skip
def test_cut_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message


class TwoHeads(nn.Module):
    """Heads inside a container: replace_head must reach them by a dotted name."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 3)
        self.heads = nn.ModuleDict({"main": nn.Linear(3, 2), "aux": nn.Linear(3, 5)})

    def forward(self, x):
        h = self.trunk(x)
        return self.heads["main"](h), self.heads["aux"](h)


def test_replace_head_reaches_a_nested_head_by_its_dotted_name_and_keeps_its_bias():
    torch.manual_seed(0)
    model = TwoHeads()
    new = replace_head(model, 1, head="heads.main")  # one output (a binary logit) is allowed
    main = new.heads["main"]
    assert (main.in_features, main.out_features) == (3, 1) and main.bias is not None
    assert main is not model.heads["main"] and model.heads["main"].out_features == 2  # the original untouched
    assert torch.equal(new.heads["aux"].weight, model.heads["aux"].weight)  # the other head kept
    assert [o.shape for o in new(torch.randn(6, 4))] == [(6, 1), (6, 5)]
    assert replace_head(model, 7).heads["aux"].out_features == 7  # the last nn.Linear, dotted "heads.aux"


def test_replace_head_puts_the_new_head_on_the_old_heads_device():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to("meta")  # not the default device
    new = replace_head(model, 5)
    assert new[2].weight.device.type == "meta" and new[2].bias.device.type == "meta"


def test_a_sequential_cut_is_the_slice_and_holds_its_parameters_at_once():
    model = bn_mlp()
    cut = FeatureExtractor(model, "2")
    assert isinstance(cut.body, nn.Sequential) and len(cut.body) == 3  # model[:3], before any call
    assert [id(p) for p in cut.parameters()] == [id(p) for p in model[:3].parameters()]
    cut.double()  # .to/.double on the slice: its layers move (they are the model's own layers)
    assert model[1].weight.dtype == torch.float64 and model[2].running_mean.dtype == torch.float64
    assert model[6].weight.dtype == torch.float32  # above the cut: not part of the slice
    assert cut.eval()(torch.randn(3, 12, dtype=torch.float64)).dtype == torch.float64
    cut.to_empty(device="meta", recurse=False)  # not recursive: the extractor holds nothing itself
    assert model[1].weight.device.type == "cpu"


class Stem(nn.Module):
    """A root parameter, a buffers-only leaf, a layer called twice, then the layers above."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))
        self.norm = nn.BatchNorm1d(4, affine=False)
        self.twice = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)
        self.top = nn.Linear(4, 2)

    def forward(self, x):
        x = self.norm(x + self.cls)
        return self.top(self.after(self.twice(torch.relu(self.twice(x)))))


def test_a_hooked_cut_registers_root_parameters_buffers_only_leaves_and_each_tensor_once():
    torch.manual_seed(0)
    model = Stem()
    cut = FeatureExtractor(model, "after")
    x = torch.randn(5, 4)
    for _ in range(2):  # the second call must not register anything again
        cut(x)
        held = list(cut.state_dict(keep_vars=True).values())
        assert len(held) == len({id(t) for t in held})  # each tensor once
        expected = [model.cls, *model.norm.buffers(), *model.twice.parameters(), *model.after.parameters()]
        assert {id(t) for t in held} == {id(t) for t in expected}
        assert {id(p) for p in cut.parameters()} == {id(p) for p in expected if p.requires_grad}
        assert {id(b) for b in cut.buffers()} == {id(b) for b in model.norm.buffers()}
    assert not any(p is model.top.weight for p in cut.parameters())  # above the cut


def test_a_hooked_cut_passes_recurse_on_to_the_whole_model():
    model = Stem()
    cut = FeatureExtractor(model, "after", example=torch.randn(2, 4))
    cut.to_empty(device="meta", recurse=False)  # only the model's own tensors: the root parameter
    assert model.cls.device.type == "meta" and model.twice.weight.device.type == "cpu"


class Scaled(nn.Module):
    """A non-leaf module with a buffer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.full((1, 4), 2.0))
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) * self.scale


class Positions(nn.Module):
    """Own buffers of non-leaf modules: the root's positions (persistent) and mask (not), a block's scale."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))
        self.register_buffer("pos", torch.arange(4.0).unsqueeze(0))
        self.register_buffer("mask", torch.ones(1, 4), persistent=False)
        self.block = Scaled()
        self.norm = nn.BatchNorm1d(4)
        self.top = nn.Linear(4, 2)
        self.register_buffer("unused", torch.zeros(1))  # a root buffer: the root runs, so it counts too

    def forward(self, x):
        return self.top(self.norm(self.block((x + self.cls + self.pos) * self.mask)))


def test_a_hooked_cut_registers_the_own_buffers_of_non_leaf_modules_and_they_follow_every_move():
    torch.manual_seed(0)
    model = Positions()
    cut = FeatureExtractor(model, "norm", example=torch.randn(3, 4))

    def buffers():  # the model's current tensors (a move replaces them)
        return [model.pos, model.mask, model.unused, model.block.scale, *model.norm.buffers()]

    def params():
        return [model.cls, *model.block.lin.parameters(), *model.norm.parameters()]

    def same(tensors, expected):  # each expected tensor once, nothing else
        return len(tensors) == len(expected) and {id(t) for t in tensors} == {id(t) for t in expected}

    assert same(list(cut.buffers()), buffers()) and same(list(cut.parameters()), params())
    saved = cut.state_dict(keep_vars=True)  # as in the model: the non-persistent mask is not saved
    assert same(list(saved.values()), [t for t in buffers() + params() if t is not model.mask])
    assert saved["shared.0.pos"] is model.pos and saved["shared.1.scale"] is model.block.scale
    # a view holds the module's own tensors only, never its children (they are under `used`)
    assert [repr(v) for v in cut.shared] == [
        "_OwnState(of Positions: cls, pos, mask, unused)",
        "_OwnState(of Scaled: scale)",
    ]
    fresh = Positions()
    fresh.pos.fill_(-1.0)
    fresh.block.scale.fill_(0.0)
    FeatureExtractor(fresh, "norm", example=torch.randn(3, 4)).load_state_dict(cut.state_dict())
    assert torch.equal(fresh.pos, model.pos) and torch.equal(fresh.block.scale, model.block.scale)
    cut.double()  # a dtype move replaces every buffer by a new tensor: the extractor holds the new ones
    assert model.pos.dtype == torch.float64 and same(list(cut.buffers()), buffers())
    cut.to_empty(device="meta")  # a move across device types replaces the parameters too
    assert model.cls.device.type == "meta" and model.pos.device.type == "meta"
    assert same(list(cut.buffers()), buffers()) and same(list(cut.parameters()), params())


class Shifted(nn.Sequential):
    """A Sequential subclass with state of its own, used by its own forward."""

    def __init__(self, *layers) -> None:
        super().__init__(*layers)
        self.register_buffer("shift", torch.zeros(1, 4))

    def forward(self, x):
        return super().forward(x + self.shift)


def test_a_sequential_subclass_is_cut_by_the_hook_not_sliced():
    torch.manual_seed(0)
    model = Shifted(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model.shift.fill_(3.0)  # learned or loaded state: a slice would build its own, zero shift
    cut = FeatureExtractor(model, "1", example=torch.randn(2, 4))
    x = torch.randn(5, 4)
    torch.testing.assert_close(cut(x), torch.relu(model[0](x + 3.0)))
    assert [t is model.shift for t in cut.buffers()] == [True]
    assert {id(p) for p in cut.parameters()} == {id(p) for p in model[0].parameters()}


def test_a_container_without_state_of_its_own_gets_no_view():
    """Views hold a module's own tensors; its children's parameters and buffers are under `used`."""
    x = torch.randn(2, 1, 8, 8)
    assert len(FeatureExtractor(Nested(), "features.2", example=x).shared) == 0  # children with parameters
    model = Shifted(nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.ReLU()), nn.Linear(4, 2))
    cut = FeatureExtractor(model, "0.1", example=torch.randn(3, 4))  # the inner Sequential: buffers below
    assert [repr(v) for v in cut.shared] == ["_OwnState(of Shifted: shift)"]
    assert list(cut.used) == [model[0][0]]


# --- mutation survivors of transfer/freeze.py (issue 25): refusals word for word, defaults, exact flags ---


def _refusal(call):
    try:
        call()
    except (TypeError, ValueError) as err:
        return type(err), str(err)
    return None


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        *[
            (lambda f=f: f("model"), TypeError, "`model` must be a torch.nn.Module. Received: model='model'")
            for f in (parametrized_children, stateful_children, trainable_parameters, trainable_summary)
        ],
        (
            lambda: set_trainable(bn_mlp(), 1, depth=1),
            TypeError,
            "`trainable` must be a bool. Received: trainable=1",
        ),
        (
            lambda: set_trainable(bn_mlp(), False, depth=1, freeze_batchnorm_stats=0),
            TypeError,
            "`freeze_batchnorm_stats` must be a bool. Received: freeze_batchnorm_stats=0",
        ),
        (
            lambda: unfreeze(bn_mlp(), depth=1, train_batchnorm_stats="no"),
            TypeError,
            "`train_batchnorm_stats` must be a bool. Received: train_batchnorm_stats='no'",
        ),
        (
            lambda: unfreeze(bn_mlp(), depth=1, optimizer="sgd"),
            TypeError,
            "`optimizer` must be a torch.optim.Optimizer or None. Received: optimizer='sgd'",
        ),
        (
            lambda: freeze(bn_mlp(), names="1", depth=1),
            ValueError,
            "`names` must be given, or else `depth`, but not both. Received: names='1'",
        ),
        (
            lambda: freeze(bn_mlp(), names=["1", 2]),
            TypeError,
            "`names` must be a string or an iterable of strings (module names). Received: names=['1', 2]",
        ),
        (
            lambda: freeze(bn_mlp(), names=["9", "8"]),
            ValueError,
            "`names` must be names of submodules of `model` (its children: ['0', '1', '2', '3', '4', '5', "
            "'6']). Received: names=['9', '8']",
        ),
        (
            lambda: freeze(bn_mlp(), names=""),
            ValueError,
            "`names` must be names of submodules of `model` (its children: ['0', '1', '2', '3', '4', '5', "
            "'6']). Received: names=''",
        ),
    ],
)
def test_freeze_refusals_word_for_word(call, error, message):
    assert _refusal(call) == (error, message)


@pytest.mark.parametrize("lr", [0.0, -1.0])
def test_unfreeze_refuses_a_learning_rate_that_is_not_positive_by_name(lr):
    error, message = _refusal(lambda: unfreeze(bn_mlp(), depth=1, lr=lr))
    assert (
        error is ValueError and message.startswith("`lr` must be") and message.endswith(f"Received: lr={lr}")
    )
    assert _refusal(lambda: unfreeze(bn_mlp(), depth=1, lr=None)) is None


def test_names_are_whole_names_one_or_several():
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(4, 4))
    model.add_module("head", nn.Linear(4, 2))
    assert freeze(model, names="encoder") == ["encoder"]  # a string is one name, not its letters
    assert freeze(model, names=["encoder", "head"]) == ["encoder", "head"]
    assert not any(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_flags_are_false_not_just_falsy_and_freezing_is_the_default():
    model = bn_mlp().train()
    set_trainable(model, False, depth=2)  # freeze_batchnorm_stats defaults to True
    assert model[2].training is False
    model.train()
    model(torch.randn(4, 12))  # the forward pre-hook puts it back in eval mode
    assert model[2].training is False
    # A model with a batch norm nested after a non-BN submodule of the same layer: every one is frozen.
    nested = nn.Sequential(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.BatchNorm1d(3))).train()
    freeze(nested, depth=1)
    assert [m.training for m in nested[0]] == [True, False, False]
    # Freezing again without freeze_batchnorm_stats does not release; only unfreezing does.
    model = bn_mlp().train()
    freeze(model, depth=2)
    set_trainable(model, False, depth=2, freeze_batchnorm_stats=False)
    assert model[2].training is False


def test_unfreeze_adds_only_the_newly_trainable_parameters_at_the_optimizers_default_rate():
    model = bn_mlp()
    freeze(model, depth=2)  # layers 1 and 2
    opt = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    unfreeze(model, depth=3, optimizer=opt)  # layer 4 was trainable already and is held
    added = opt.param_groups[-1]
    assert added["name"] == "unfrozen" and added["lr"] == 0.05  # lr=None: the optimizer's default
    assert [id(p) for p in added["params"]] == [
        id(p) for p in [*model[1].parameters(), *model[2].parameters()]
    ]
    model = bn_mlp()
    freeze(model, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # holds the frozen layer's parameters already
    unfreeze(model, depth=1, optimizer=opt)
    assert len(opt.param_groups) == 1  # nothing new to add


def test_the_unfreeze_warning_word_for_word():
    model = bn_mlp()
    freeze(model, depth=1)
    opt = torch.optim.Adam(trainable_parameters(model), lr=0.1)
    unfreeze(model, depth=1)
    x, y = data()
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.warns(UserWarning) as record:
        opt.step()
    assert [type(w.message) for w in record] == [UserWarning]
    assert record[0].filename == __file__  # stacklevel: the caller's opt.step(), not torch's hook
    assert str(record[0].message) == (
        "unfreeze() made ['1.weight', '1.bias'] trainable, but this Adam does not hold them: they will not "
        "move. Pass `optimizer=` to unfreeze(), call optimizer.add_param_group(...), or build the optimizer "
        "after unfreezing."
    )


def test_the_unfreeze_warning_ignores_another_models_optimizer():
    import warnings

    model = bn_mlp()
    freeze(model, depth=1)
    unfreeze(model, depth=1)
    other = nn.Linear(2, 1)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    other(torch.ones(1, 2)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # holds none of `model`'s parameters: not this model's optimizer, no warning


def test_the_summary_prints_a_table_and_marks_only_frozen_batchnorm_as_eval():
    model = bn_mlp()
    s = trainable_summary(model)
    assert [r.kind for r in s.rows][:3] == ["Flatten", "Linear", "BatchNorm1d"]  # nothing frozen: no (eval)
    freeze(model, depth=2)
    text = str(trainable_summary(model)).splitlines()
    assert text[0] == f"{'layer':<10} {'type':<14} {'params':>9} {'trainable':>10}"
    assert text[1] == f"{'0':<10} {'Flatten':<14} {0:>9,} {0:>10,}"
    assert text[3] == f"{'2':<10} {'BatchNorm1d (eval)':<14} {16:>9,} {0:>10,}"
    assert len(text) == 1 + 7 + 1 and "frozen: 120" in text[-1]


def test_unfreeze_adds_what_it_unfroze_not_what_was_trainable_before_and_not_held():
    """Mutation survivors: layers trainable before the call that the optimizer does not hold (here layer 4)
    are the caller's choice and are not added; layers still frozen (layer 2) are not added either."""
    model = bn_mlp()
    freeze(model, depth=3)  # layers 1, 2 and 4
    unfreeze(model, names="4")
    opt = torch.optim.SGD(model[6].parameters(), lr=0.05)  # holds only the head
    unfreeze(model, names="1", optimizer=opt)
    added = [id(p) for p in opt.param_groups[-1]["params"]]
    assert added == [id(p) for p in model[1].parameters()]


_X6 = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Autoencoder("e", nn.Linear(3, 6)), TypeError,
         "`encoder` must be a torch.nn.Module. Received: encoder='e'"),
        (lambda: Autoencoder(nn.Linear(6, 3), "d"), TypeError,
         "`decoder` must be a torch.nn.Module. Received: decoder='d'"),
        (lambda: pretrain_autoencoder(nn.Linear(6, 3), nn.Linear(3, 6), [1.0], epochs=1), TypeError,
         "`images` must be a torch.Tensor of unlabeled inputs. Received: images=[1.0]"),
        (lambda: pretrain_autoencoder(nn.Linear(6, 3), nn.Linear(3, 6), _X6, epochs=0), ValueError,
         "`epochs` must be an integer >= 1. Received: epochs=0"),
        (lambda: pretrain_autoencoder(nn.Linear(6, 3), nn.Linear(3, 6), _X6, epochs=1, lr=0.0), ValueError,
         "`lr` must be a real number in (0, inf). Received: lr=0.0"),
        (lambda: pretrain_autoencoder(nn.Linear(6, 3), nn.Linear(3, 6), _X6, epochs=1, batch_size=0),
         ValueError, "`batch_size` must be an integer >= 1. Received: batch_size=0"),
        (lambda: pretrain_autoencoder(nn.Linear(6, 3), nn.Linear(3, 5), _X6, epochs=1), ValueError,
         "`decoder` must be a module whose output has the input's shape (6,). Received: decoder=(5,)"),
    ],
)  # fmt: skip
def test_autoencoder_refusals_word_for_word(call, error, message):
    assert _refusal(call) == (error, message)


def test_autoencoder_defaults_are_adam_at_1e3_batches_of_128_and_seed_0():
    """Mutation survivors of the defaults: a default run equals the run with them spelled out, and each one
    matters (another rate, batch size or seed gives another history)."""
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))

    def losses(**kw):
        torch.manual_seed(0)
        enc, dec = nn.Linear(6, 3), nn.Linear(3, 6)
        return pretrain_autoencoder(enc, dec, x, epochs=2, **kw)[1]["loss"]

    default = losses()
    assert default == losses(lr=1e-3, batch_size=128, seed=0, device="cpu")
    for other in (dict(lr=1e-2), dict(batch_size=64), dict(seed=1)):
        assert losses(**other) != default, other
