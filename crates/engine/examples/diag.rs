use engine::*;
fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let mut f = std::fs::File::open(&path).unwrap();
    let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut types = std::collections::BTreeMap::new();
    for (n, t) in &c.tensor_infos { if n.starts_with("blk.0.") || !n.starts_with("blk") { types.insert(n.clone(), format!("{:?} {:?}", t.ggml_dtype, t.shape)); } }
    for (n, t) in types { println!("{n}: {t}"); }
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/work/shared/fixtures/reference/llama_cpp.json").unwrap()).unwrap();
    for fmt in [WeightFormat::Quantized, WeightFormat::F32] {
        let m = Model::load(&path, &LoadOptions { format: fmt, ..Default::default() }).unwrap();
        for case in fx["chat"].as_array().unwrap() {
            let ids: Vec<u32> = case["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let l = m.last_logits(&ids).unwrap();
            let mut maxd = 0f32; let mut sum = 0f32;
            for p in case["prompt_last_logits_top50"].as_array().unwrap() {
                let d = l[p[0].as_u64().unwrap() as usize] - p[1].as_f64().unwrap() as f32;
                maxd = maxd.max(d.abs()); sum += d;
            }
            println!("{fmt:?}: max {maxd:.3} mean {:.3}", sum / 50.0);
            let exp: Vec<u32> = case["greedy_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let margins: Vec<f64> = case["top1_minus_top2_logit"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let must = margins.iter().position(|&m| m < 0.05).unwrap_or(exp.len());
            let g = m.generate(&ids, &GenerationParams { max_tokens: exp.len(), ..Default::default() }, None, &mut |_| {}).unwrap();
            let agree = g.ids.iter().zip(&exp).take_while(|(a, b)| a == b).count();
            println!("   greedy agree {agree}/{} must {must}; {:.1} tok/s decode, {:.1} tok/s prompt", exp.len(), g.decode_tokens_per_second(), g.prompt_tokens_per_second());
        }
    }
}
