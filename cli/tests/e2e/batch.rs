//! The batch endpoint: results in order, good and bad items side by side.

use serde_json::json;

use crate::util::{self, TestServer, cards};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mixes_good_and_bad_items_in_order() {
    let server = TestServer::start().await;
    let sf = server.client("storefront");
    let (a, b) = (cards::fresh(), cards::fresh());
    let year = util::this_year() + 4;
    let items = json!({"items": [
        util::card_request(&a),
        util::card_request("4242424242424241"),
        {"card": {"number": b, "exp_month": 1, "exp_year": 2019}},
        {"card": {"number": b, "exp_month": 12, "exp_year": year, "cvv": "999"}},
        util::card_request(&a),
        {"card": {"number": b, "exp_month": 12, "exp_year": year}, "format": "bin_last4", "subject": "cust_7"},
        [],
    ]});
    let r = sf.post("/v1/tokens/batch", &items).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(&a) && !r.text().contains(&b));
    let v = r.json();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 7);
    assert!(res[0]["token"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(res[0]["deduplicated"], false);
    for (i, code, status) in [
        (1, "invalid_card_number", 422),
        (2, "card_expired", 422),
        (3, "cvv_not_accepted", 422),
        (6, "invalid_request", 400),
    ] {
        let e = &res[i]["error"];
        assert_eq!(
            (e["code"].as_str(), e["status"].as_u64()),
            (Some(code), Some(status)),
            "item {i}: {e}"
        );
        assert_eq!(e["type"], format!("https://panvault.dev/problems/{code}"));
        assert!(e["request_id"].is_string());
    }
    assert_eq!(res[4]["token"], res[0]["token"]);
    assert_eq!(res[4]["deduplicated"], true);
    assert_eq!(res[5]["token"].as_str().unwrap().len(), 16);
    let d = server
        .client("payments")
        .detokenize(res[5]["token"].as_str().unwrap(), "charge")
        .await;
    assert!(d.json()["card"]["number"] == b.as_str());

    // 1000 items (about 80 KB: over the 64 KiB single-request limit) are one batch
    let many: Vec<_> = (0..1000)
        .map(|_| util::card_request(&cards::fresh()))
        .collect();
    let r = sf.post("/v1/tokens/batch", &json!({ "items": many })).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["results"].as_array().unwrap().len(), 1000);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["token"].is_string())
    );
    let too_many: Vec<_> = (0..1001).map(|_| util::card_request(cards::VISA)).collect();
    sf.post("/v1/tokens/batch", &json!({ "items": too_many }))
        .await
        .assert_problem(400, "invalid_request");
    sf.post("/v1/tokens/batch", &json!({ "items": [] }))
        .await
        .assert_problem(400, "invalid_request");
    server
        .client("payments")
        .post(
            "/v1/tokens/batch",
            &json!({"items": [util::card_request(cards::VISA)]}),
        )
        .await
        .assert_problem(403, "forbidden");
    server.stop().await;
}
