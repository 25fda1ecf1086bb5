"""The CGCNN network (cgcnn.nn.model): the convolution against a dense reference written
here from the paper's equations, pooling, parameter names, embeddings, symmetry."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cgcnn.config import GraphConfig, ModelConfig
from cgcnn.data.batch import make_batch
from cgcnn.data.dataset import CrystalDataset
from cgcnn.data.features import gaussian_expand
from cgcnn.data.graph import CrystalGraph
from cgcnn.data.graphset import GraphSet
from cgcnn.nn.model import CGCNN, ConvLayer, mean_pool

N_ATOM_FEA, N_NBR_FEA = 4, 5


def dense_conv_reference(layer: ConvLayer, x, edge_attr, edge_index):
    """CGCNN Eq. 5 as written in the original (gather, concatenate, one linear map), with a
    Python loop for the sum over neighbours.  Uses ``layer``'s own weights and norms."""
    src, dst = edge_index
    z = torch.cat([x[dst], x[src], edge_attr], dim=1)  # z_ij = [v_i, v_j, u_ij]
    gated = layer.bn1(layer.fc_full(z))
    gate, core = gated.chunk(2, dim=1)
    message = torch.sigmoid(gate) * F.softplus(core)
    summed = torch.stack([message[dst == i].sum(dim=0) for i in range(x.shape[0])])
    return F.softplus(x + layer.bn2(summed))


def random_layer(seed: int) -> ConvLayer:
    torch.manual_seed(seed)
    layer = ConvLayer(N_ATOM_FEA, N_NBR_FEA).double()
    with torch.no_grad():  # non-trivial norms, so that eval mode tests something
        for bn in (layer.bn1, layer.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return layer


def toy_graph(counts: list[int], seed: int):
    """Atoms with the given numbers of incoming edges (grouped by centre), random sources."""
    g = torch.Generator().manual_seed(seed)
    n = len(counts)
    dst = torch.repeat_interleave(torch.arange(n), torch.tensor(counts))
    src = torch.randint(0, n, (len(dst),), generator=g)
    x = torch.randn(n, N_ATOM_FEA, generator=g, dtype=torch.float64)
    edge_attr = torch.rand(len(dst), N_NBR_FEA, generator=g, dtype=torch.float64)
    return x, edge_attr, torch.stack([src, dst])


@pytest.mark.parametrize("mode", ["eval", "train", "inference"])
@pytest.mark.parametrize(
    ("counts", "regular"), [([3, 3, 3, 3, 3], 3), ([1, 4, 2, 3, 1], None)], ids=["regular", "irregular"]
)
def test_conv_layer_equals_the_dense_reference(mode, counts, regular):
    # "inference" (eval mode without autograd) takes the layer's folded, in-place path
    layer = random_layer(seed=1)
    reference = copy.deepcopy(layer)
    layer.train(mode == "train")
    reference.train(mode == "train")
    x, edge_attr, edge_index = toy_graph(counts, seed=2)

    with torch.set_grad_enabled(mode != "inference"):
        out = layer(x, edge_attr, edge_index, regular)
    expected = dense_conv_reference(reference, x, edge_attr, edge_index)

    assert out.shape == (len(counts), N_ATOM_FEA)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # in train mode both updated their running statistics identically
    for name, buf in layer.named_buffers():
        torch.testing.assert_close(buf, dict(reference.named_buffers())[name], rtol=1e-10, atol=1e-10)


def test_regular_and_irregular_paths_agree_on_a_regular_graph():
    layer = random_layer(seed=3).eval()
    x, edge_attr, edge_index = toy_graph([4, 4, 4], seed=4)
    torch.testing.assert_close(layer(x, edge_attr, edge_index, 4), layer(x, edge_attr, edge_index, None))


def test_atom_without_incoming_messages_only_gets_the_normalised_zero_sum():
    # Atom 1 receives nothing: its update is softplus(v_1 + BN2(0)), no fake message.
    layer = random_layer(seed=5).eval()
    x, edge_attr, edge_index = toy_graph([2, 0, 2], seed=6)
    out = layer(x, edge_attr, edge_index)
    bn2 = layer.bn2
    zero_sum = (0 - bn2.running_mean) / torch.sqrt(bn2.running_var + bn2.eps) * bn2.weight + bn2.bias
    torch.testing.assert_close(out[1], F.softplus(x[1] + zero_sum))


def test_mean_pool_is_the_mean_over_each_crystal():
    x = torch.arange(14, dtype=torch.float64).reshape(7, 2)
    batch = torch.tensor([0, 0, 0, 1, 2, 2, 2])
    pooled = mean_pool(x, batch, 3)
    expected = torch.stack([x[batch == k].mean(dim=0) for k in range(3)])
    torch.testing.assert_close(pooled, expected)
    assert pooled[1].tolist() == [6.0, 7.0]  # the one-atom crystal is its own atom


# -- the network -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model_config, tiny_features, tiny_graph_config) -> CGCNN:
    cfg = tiny_model_config.model_copy(
        update={"orig_atom_fea_len": tiny_features.length, "nbr_fea_len": tiny_graph_config.n_gaussians}
    )
    torch.manual_seed(0)
    return CGCNN(cfg, atom_table=tiny_features.table, graph=tiny_graph_config).eval()


def test_parameter_names_are_the_original_cgcnn_names(model):
    expected = {
        "embedding.weight",
        "embedding.bias",
        "conv_to_fc.weight",
        "conv_to_fc.bias",
        "fc_out.weight",
        "fc_out.bias",
    }
    for k in range(2):
        expected |= {f"convs.{k}.fc_full.weight", f"convs.{k}.fc_full.bias"}
        for bn in ("bn1", "bn2"):
            expected |= {
                f"convs.{k}.{bn}.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            }
    assert set(model.state_dict()) == expected  # the feature table and centres are not weights
    assert model.state_dict()["convs.0.fc_full.weight"].shape == (2 * 8, 2 * 8 + 21)


def test_second_hidden_layer_is_named_fcs_0(tiny_features, tiny_graph_config):
    cfg = ModelConfig(orig_atom_fea_len=8, nbr_fea_len=21, atom_fea_len=8, h_fea_len=16, n_conv=1, n_h=2)
    names = set(CGCNN(cfg, atom_table=tiny_features.table, graph=tiny_graph_config).state_dict())
    assert {"fcs.0.weight", "fcs.0.bias"} <= names and "fcs.1.weight" not in names


def test_model_refuses_inputs_that_do_not_fit(tiny_features, tiny_graph_config):
    with pytest.raises(ValueError, match="distance features"):
        CGCNN(ModelConfig(orig_atom_fea_len=8, nbr_fea_len=41), atom_table=tiny_features.table, graph=tiny_graph_config)
    with pytest.raises(ValueError, match="atom-feature length"):
        CGCNN(
            ModelConfig(orig_atom_fea_len=92, nbr_fea_len=21), atom_table=tiny_features.table, graph=tiny_graph_config
        )


def test_conv_features_are_the_mean_of_the_last_convolution(model, tiny_dataset):
    positions = [0, 5, 6, 21]  # CsCl-097, NaCl-099, NaCl-101 (6 neighbours), GaAs-099
    batch = make_batch(tiny_dataset, positions)
    with torch.no_grad():
        x = model.embedding(torch.tensor(np.array(tiny_dataset.features.table))[batch.atomic_numbers])
        edge_attr = gaussian_expand(batch.distances, tiny_dataset.config.centers, tiny_dataset.config.step).float()
        for conv in model.convs:
            x = dense_conv_reference(conv, x, edge_attr, batch.edge_index)
        expected = torch.stack([x[batch.batch == k].mean(dim=0) for k in range(len(positions))])
        torch.testing.assert_close(model.conv_features(batch), expected)


def test_embed_shapes_and_head(model, tiny_dataset):
    batch = make_batch(tiny_dataset, range(5))
    conv, hidden = model.embed(batch)
    assert conv.shape == (5, 8) and hidden.shape == (5, 16)
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (5,)
    torch.testing.assert_close(model.fc_out(hidden).squeeze(1), out)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_permuting_crystals_permutes_outputs(model, tiny_dataset, mode):
    positions = np.array([3, 7, 11, 14, 19, 23])
    perm = np.array([4, 0, 5, 2, 1, 3])
    m = copy.deepcopy(model).train(mode == "train")
    with torch.no_grad():
        out = m(make_batch(tiny_dataset, positions))
        out_perm = m(make_batch(tiny_dataset, positions[perm]))
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-5, atol=1e-5)


def test_in_eval_mode_a_crystal_does_not_depend_on_its_batch(model, tiny_dataset):
    positions = [1, 6, 12, 22]  # mixes 12-, 6- and 4-neighbour crystals: the irregular path
    with torch.no_grad():
        together = model(make_batch(tiny_dataset, positions))
        alone = torch.cat([model(make_batch(tiny_dataset, [p])) for p in positions])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_distances_are_expanded_with_the_graph_settings(model, tiny_graph_config):
    assert torch.allclose(model.centers, torch.tensor(tiny_graph_config.centers, dtype=torch.float32))
    assert model.width == tiny_graph_config.step
    assert GraphConfig(radius=8).n_gaussians == 41  # the original CGCNN's 41 features


def test_prediction_does_not_depend_on_the_order_edges_are_listed_in(model, tiny_dataset):
    rng = np.random.default_rng(0)
    shuffled = []
    for k in range(len(tiny_dataset)):
        g = tiny_dataset.graphs.graph(k)
        p = rng.permutation(g.n_edges)
        shuffled.append(CrystalGraph(g.atomic_numbers, g.edge_index[:, p], g.distances[p], g.material_id))
    reordered = CrystalDataset(
        GraphSet.from_graphs(tiny_dataset.ids, shuffled, tiny_dataset.config), None, tiny_dataset.features
    )
    positions = [tiny_dataset.ids.index(m) for m in ("MgO-097", "LiF-099")]  # 12 neighbours each: regular
    with torch.no_grad():
        torch.testing.assert_close(model(make_batch(reordered, positions)), model(make_batch(tiny_dataset, positions)))
