"""Model specs <-> STAC items with the Machine Learning Model (MLM) extension."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import xeofm
from xeofm.errors import SpecError

from .conftest import make_cube

pystac = pytest.importorskip("pystac")
torch = pytest.importorskip("torch")

from xeofm.models import mlm  # noqa: E402


@pytest.mark.parametrize("name", xeofm.list_models())
def test_round_trip_every_registered_model(name):
    spec = xeofm.models.get_spec(name)
    item = mlm.spec_to_stac(spec)
    d = json.loads(json.dumps(item.to_dict()))  # plain JSON all the way
    assert mlm.check_item(d) == []
    back = mlm.spec_from_stac(pystac.Item.from_dict(d))
    assert back.hash == spec.hash
    assert back.bands == spec.bands
    assert (back.licence, back.citation, back.description) == (spec.licence, spec.citation, spec.description)
    p = d["properties"]
    assert set(p["mlm:tasks"]) <= set(mlm.MLM_TASKS)
    assert p["mlm:framework"] == "pytorch" and p["mlm:name"] == name
    assert mlm.MLM_SCHEMA in d["stac_extensions"]
    assert any("mlm:model" in a["roles"] for a in d["assets"].values())


def test_item_content_satlas_and_dinov3():
    d = mlm.spec_to_stac(xeofm.models.get_spec("satlas-swinb-s2-ms")).to_dict()
    p = d["properties"]
    inp = p["mlm:input"][0]
    assert inp["bands"] == ["TCI_R", "TCI_G", "TCI_B", "B05", "B06", "B07", "B08", "B11", "B12"]
    assert inp["input"] == {"shape": [-1, 9, 256, 256], "dim_order": ["batch", "bands", "height", "width"],
                            "data_type": "float32"}
    assert inp["value_scaling"][0] == {"type": "z-score", "mean": 0.0, "stddev": 255.0}
    assert inp["value_scaling"][-1] == {"type": "z-score", "mean": 0.0, "stddev": 8160.0}
    out = p["mlm:output"][0]
    assert out["result"]["shape"] == [-1, 1024, 8, 8] and out["tasks"] == ["similarity-search"]
    assert p["mlm:architecture"] == "Swin Transformer V2 (swin_v2_b)"
    assert p["mlm:total_parameters"] == 86_916_088 and p["license"] == "ODC-BY-1.0" and p["gsd"] == 10.0
    w = d["assets"]["weights"]
    assert w["href"].endswith("/sentinel2_swinb_si_ms.pth") and w["mlm:artifact_type"] == "torch.save"
    assert w["bands"][3] == {"name": "B05", "eo:common_name": "rededge1", "eo:center_wavelength": 0.705}
    assert p["xeofm:stride"] == 32 and p["xeofm:builder"] == "xeofm.models.rgb:build_satlas_swin"

    p = mlm.spec_to_stac(xeofm.models.get_spec("dinov3-vitl16-sat493m")).to_dict()["properties"]
    vs = p["mlm:input"][0]["value_scaling"]  # /255 then z-score, folded into one z-score in raw units
    assert vs[0]["mean"] == pytest.approx(0.430 * 255) and vs[0]["stddev"] == pytest.approx(0.213 * 255)
    assert p["mlm:output"][0]["result"]["shape"] == [-1, 5 + 256, 1024]
    assert p["xeofm:prefix_tokens"] == 5 and p["license"] == "other" and "DINOv3" in p["xeofm:licence"]


def test_item_content_clip_and_classes():
    p = mlm.spec_to_stac(xeofm.models.get_spec("skyclip-vit-l-14-tokens")).to_dict()["properties"]
    assert p["mlm:tasks"] == ["similarity-search", "scene-classification"]
    assert p["xeofm:text_tower"] == "open_clip" and p["xeofm:task"] == "embedding+zero-shot"
    assert p["mlm:output"][0]["result"]["dim_order"] == ["batch", "token", "embedding"]
    p = mlm.spec_to_stac(xeofm.models.get_spec("xeofm-demo-landcover")).to_dict()["properties"]
    out = p["mlm:output"][0]
    assert out["tasks"] == ["semantic-segmentation"]
    assert [c["name"] for c in out["classification:classes"]] == ["water", "vegetation", "bare", "built"]


def test_total_parameters_counted_on_meta_device():
    spec = xeofm.models.get_spec("ssl4eo-s12-resnet18")
    p = mlm.spec_to_stac(spec, total_parameters=True).properties
    import timm

    with torch.device("meta"):
        ref = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0)
    assert p["mlm:total_parameters"] == sum(q.numel() for q in ref.parameters())
    assert "mlm:total_parameters" not in mlm.spec_to_stac(spec).properties
    assert mlm.spec_to_stac(spec, total_parameters=123).properties["mlm:total_parameters"] == 123


# --------------------------------------------------------------------------------------
# Items written elsewhere
# --------------------------------------------------------------------------------------
def _hand_written_item():
    """An MLM item as another tool would write it: no xeofm:* fields."""
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [mlm.MLM_SCHEMA, "https://stac-extensions.github.io/eo/v2.0.0/schema.json"],
        "id": "my-resnet18",
        "geometry": {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]},
        "bbox": [-180, -90, 180, 90],
        "properties": {
            "datetime": None,
            "start_datetime": "2015-01-01T00:00:00Z",
            "end_datetime": "2030-01-01T00:00:00Z",
            "mlm:name": "test-mlm-resnet18",
            "mlm:architecture": "ResNet",
            "mlm:tasks": ["similarity-search"],
            "mlm:framework": "pytorch",
            "mlm:input": [{
                "name": "rgb",
                "bands": ["red", "green", "blue"],
                "input": {"shape": [-1, 3, 64, 64], "dim_order": ["batch", "bands", "height", "width"],
                          "data_type": "float32"},
                "value_scaling": [
                    {"type": "z-score", "mean": 1000.0, "stddev": 2000.0},
                    {"type": "z-score", "mean": 1100.0, "stddev": 2100.0},
                    {"type": "z-score", "mean": 1200.0, "stddev": 2200.0},
                ],
            }],
            "mlm:output": [{
                "name": "features",
                "tasks": ["similarity-search"],
                "result": {"shape": [-1, 512, 2, 2], "dim_order": ["batch", "embedding", "height", "width"],
                           "data_type": "float32"},
            }],
            "xeofm:builder_kwargs": {"arch": "resnet18", "in_chans": 3},
        },
        "links": [],
        "assets": {
            "model": {
                "href": "https://example.com/resnet18.safetensors",
                "roles": ["mlm:model", "mlm:weights"],
                "mlm:artifact_type": "safetensors.torch.save_file",
                "bands": [{"name": "red", "eo:common_name": "red"}, {"name": "green", "eo:common_name": "green"},
                          {"name": "blue", "eo:common_name": "blue"}],
            },
            "code": {
                "href": "https://pypi.org/project/xeofm/",
                "roles": ["mlm:source_code", "code"],
                "mlm:entrypoint": "xeofm.models.builders:timm_feature_map",
            },
        },
    }


def test_hand_written_item_registers_and_embeds(tmp_path):
    d = _hand_written_item()
    path = tmp_path / "item.json"
    path.write_text(json.dumps(d))
    spec = mlm.spec_from_stac(path)
    assert (spec.output, spec.chip_size, spec.stride, spec.embedding_dim) == ("patch", 64, 32, 512)
    assert spec.builder == "xeofm.models.builders:timm_feature_map"
    assert spec.mean == (1000.0, 1100.0, 1200.0) and spec.std == (2000.0, 2100.0, 2200.0)
    assert spec.weights_file == "resnet18.safetensors"
    assert dict(spec.metadata)["weights_url"] == "https://example.com/resnet18.safetensors"
    assert [b.common_name for b in spec.bands] == ["red", "green", "blue"]
    xeofm.register(spec, overwrite=True)
    assert "test-mlm-resnet18" in xeofm.list_models()
    with pytest.raises(xeofm.WeightsError, match="example.com/resnet18"):
        xeofm.models.resolve_model("test-mlm-resnet18")  # never downloaded
    cube = make_cube(64, 64, seed=3)
    emb = xeofm.embed(cube, "test-mlm-resnet18", pretrained=False, overlap=0).values
    from xeofm.models.builders import timm_feature_map

    torch.manual_seed(0)  # random builds are seeded, so this is the same module
    ref = timm_feature_map("resnet18", 3).eval()
    mean = torch.tensor([1000.0, 1100.0, 1200.0]).view(1, 3, 1, 1)
    std = torch.tensor([2000.0, 2100.0, 2200.0]).view(1, 3, 1, 1)
    x = (torch.tensor(cube.values.astype("float32"))[None] - mean) / std
    with torch.no_grad():
        want = ref(x)[0].numpy()
    assert emb.shape == (512, 2, 2)
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)


def test_value_scaling_kinds_and_legacy_statistics():
    d = _hand_written_item()
    inp = d["properties"]["mlm:input"][0]
    inp["value_scaling"] = [{"type": "scale", "value": 10000}]
    assert mlm.spec_from_stac(d).scale == 1e-4
    inp["value_scaling"] = [{"type": "min-max", "minimum": 0, "maximum": 255}]
    s = mlm.spec_from_stac(d)
    assert s.mean == (0.0,) * 3 and s.std == (255.0,) * 3
    inp["value_scaling"] = [{"type": "offset", "value": 1000}]
    assert mlm.spec_from_stac(d).offset == -1000.0
    inp.pop("value_scaling")
    inp["norm_type"] = "z-score"
    inp["statistics"] = [{"mean": 1, "stddev": 2}, {"mean": 3, "stddev": 4}, {"mean": 5, "stddev": 6}]
    s = mlm.spec_from_stac(d)
    assert s.mean == (1.0, 3.0, 5.0) and s.std == (2.0, 4.0, 6.0)
    inp.pop("norm_type")
    inp["value_scaling"] = [{"type": "clip", "minimum": 0, "maximum": 1}]
    with pytest.raises(SpecError, match="'clip' cannot be expressed"):
        mlm.spec_from_stac(d)
    inp["value_scaling"] = [{"type": "z-score", "mean": 1, "stddev": 2}] * 2
    with pytest.raises(SpecError, match="2 entries for 3 bands"):
        mlm.spec_from_stac(d)


def test_missing_fields_are_named():
    d = _hand_written_item()
    del d["properties"]["mlm:architecture"]
    del d["properties"]["mlm:input"]
    del d["assets"]["code"]
    with pytest.raises(SpecError) as err:
        mlm.spec_from_stac(d)
    msg = str(err.value)
    assert "mlm:architecture is missing" in msg and "mlm:input is missing" in msg and "no builder" in msg
    d = _hand_written_item()
    d["properties"]["mlm:tasks"] = ["embedding"]
    d["properties"]["mlm:output"][0].pop("result")
    d["assets"]["model"]["roles"] = ["data"]
    with pytest.raises(SpecError) as err:
        mlm.spec_from_stac(d)
    msg = str(err.value)
    assert "outside the MLM task enum: ['embedding']" in msg
    assert "mlm:output[0].result is missing" in msg and "'mlm:model' role" in msg
    d = _hand_written_item()
    d["properties"]["mlm:input"][0]["input"]["shape"] = [-1, 3, -1, -1]
    with pytest.raises(SpecError, match="no fixed height/width"):
        mlm.spec_from_stac(d)
    d = _hand_written_item()
    d["properties"]["mlm:output"][0]["result"] = {"shape": [-1, 50, 512], "dim_order": ["batch", "token", "embedding"],
                                                  "data_type": "float32"}
    with pytest.raises(SpecError, match="xeofm:stride"):
        mlm.spec_from_stac(d)


def test_specs_that_cannot_be_items():
    spec = xeofm.wrap(torch.nn.Conv2d(3, 4, 8, 8), bands=["red", "green", "blue"], chip_size=32, stride=8,
                      embedding_dim=4, name="wrapped")
    with pytest.raises(SpecError, match="builder"):
        mlm.spec_to_stac(spec)
    base = xeofm.models.get_spec("ssl4eo-s12-resnet18")
    with pytest.raises(SpecError, match="not a valid mlm:name"):
        mlm.spec_to_stac(base.replace(name="my model!"))
    with pytest.raises(SpecError, match="JSON"):
        mlm.spec_to_stac(base.replace(metadata={"x": object()}))


def test_user_fields_survive_round_trip(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    spec = xeofm.models.get_spec("prithvi-eo-2.0-300m-tl").replace(
        name="my-prithvi", weights=str(weights), weights_sha256="ab" * 32, offset=-1000, overlap=32,
    )
    item = mlm.spec_to_stac(spec)
    assert item.assets["weights"].extra_fields["file:checksum"] == "1220" + "ab" * 32
    assert item.assets["weights"].extra_fields["mlm:artifact_type"] == "torch.save"  # Prithvi_EO_V2_300M_TL.pt
    assert item.properties["mlm:input"][0]["input"]["dim_order"] == ["batch", "bands", "time", "height", "width"]
    back = mlm.spec_from_stac(copy.deepcopy(item.to_dict()))
    assert back.hash == spec.hash and back.weights == str(weights) and back.aux == ("time", "latlon")
