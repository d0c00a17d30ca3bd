//! The properties form: Samza names, `cairn.*` keys, its errors, and loading fixture files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_contract::{JobSpec, PropertyError, SpecError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn property_errors(text: &str) -> Vec<PropertyError> {
    match JobSpec::from_properties_str(text) {
        Err(SpecError::Properties(errors)) => errors,
        other => panic!("expected property errors, got {other:?}"),
    }
}

#[test]
fn samza_names_give_the_same_spec_as_yaml() {
    let properties = "\
job.name=wordcount
job.container.count=2
task.class=count
task.checkpoint.interval.ms=1500
task.checkpoint.retained=4
task.checkpoint.store.factory=filesystem
task.checkpoint.store.filesystem.path=ckpt/wc
cairn.input.type=generator
cairn.input.partitions=8
cairn.task.config.field=word
cairn.task.config.caseSensitive=false
cairn.output.type=stdout
";
    let yaml = "
name: wordcount
parallelism: 2
input: {type: generator, partitions: 8}
task: {name: count, config: {field: word, caseSensitive: false}}
output: {type: stdout}
checkpoint: {interval: 1500ms, retained: 4, store: file://./ckpt/wc}
";
    let from_properties = JobSpec::from_properties_str(properties).unwrap();
    assert_eq!(from_properties, JobSpec::from_yaml_str(yaml).unwrap());
    assert_eq!(
        from_properties.checkpoint.interval,
        Duration::from_millis(1500)
    );
    assert_eq!(
        from_properties.spec_hash(),
        JobSpec::from_yaml_str(yaml).unwrap().spec_hash()
    );
}

#[test]
fn an_absolute_filesystem_path_becomes_an_absolute_file_url() {
    let spec = JobSpec::from_properties_str(
        "job.name=wc\ntask.class=count\ncairn.input.type=generator\ncairn.input.partitions=1\n\
         task.checkpoint.store.filesystem.path=/var/lib/cairn/checkpoints\n",
    )
    .unwrap();
    assert_eq!(spec.checkpoint.store, "file:///var/lib/cairn/checkpoints");
    assert_eq!(
        spec.checkpoint.store_location(),
        Ok(cairn_contract::StoreUrl::File(
            "/var/lib/cairn/checkpoints".into()
        ))
    );
}

/// The seed's section 5.1, as written there: both paths are set and the factory chooses.
const SEED_CHECKPOINT_BLOCK: &str = "\
task.checkpoint.interval.ms=60000
task.checkpoint.store.factory=FACTORY
task.checkpoint.store.hdfs.path=/path/to/checkpoint
task.checkpoint.store.filesystem.path=/path/to/local/checkpoint
";

fn seed_spec(factory: &str) -> JobSpec {
    let text = format!(
        "job.name=wc\ntask.class=count\ncairn.input.type=generator\ncairn.input.partitions=1\n{}",
        SEED_CHECKPOINT_BLOCK.replace("FACTORY", factory)
    );
    JobSpec::from_properties_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_seeds_checkpoint_properties_work_as_written() {
    let spec = seed_spec("filesystem");
    assert_eq!(spec.checkpoint.store, "file:///path/to/local/checkpoint");
    assert_eq!(spec.checkpoint.interval.as_millis(), 60_000);
    let spec = seed_spec("hdfs");
    assert_eq!(spec.checkpoint.store, "hdfs:///path/to/checkpoint");
    assert_eq!(
        spec.checkpoint.store_location(),
        Ok(cairn_contract::StoreUrl::Object {
            service: cairn_contract::ObjectService::Hdfs,
            bucket: String::new(),
            prefix: "path/to/checkpoint".into(),
        })
    );
}

#[test]
fn an_hdfs_path_alone_or_with_its_namenode_makes_an_hdfs_store() {
    let base =
        "job.name=wc\ntask.class=count\ncairn.input.type=generator\ncairn.input.partitions=1\n";
    for (line, store) in [
        (
            "task.checkpoint.store.hdfs.path=/cairn/wc",
            "hdfs:///cairn/wc",
        ),
        (
            "task.checkpoint.store.hdfs.path=hdfs://nn:8020/cairn/wc",
            "hdfs://nn:8020/cairn/wc",
        ),
    ] {
        let spec = JobSpec::from_properties_str(&format!("{base}{line}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.checkpoint.store, store);
    }
}

#[test]
fn hdfs_settings_that_cannot_work_are_named() {
    for (text, line, key, problem) in [
        (
            "job.name=wc\ntask.checkpoint.store.factory=hdfs\n",
            2,
            "task.checkpoint.store.factory",
            "needs the directory to write to (`task.checkpoint.store.hdfs.path`)",
        ),
        (
            "job.name=wc\ntask.checkpoint.store.hdfs.path=ckpt\n",
            2,
            "task.checkpoint.store.hdfs.path",
            "\"ckpt\" is neither an absolute path nor an hdfs:// URL",
        ),
        (
            "job.name=wc\ntask.checkpoint.store.hdfs.path=/a\n\
             task.checkpoint.store.filesystem.path=/b\n",
            3,
            "task.checkpoint.store.filesystem.path",
            "names a second store next to line 2 (`task.checkpoint.store.hdfs.path`)",
        ),
    ] {
        let errors = property_errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].line, line, "{errors:#?}");
        assert_eq!(errors[0].key, key);
        assert_eq!(errors[0].problem, problem);
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = JobSpec::from_properties_str(
        "# header\njob.name=wc\n\nsystems.kafka.consumer.zookeeper.connect=zk:2181\n",
    )
    .unwrap_err();
    let SpecError::Properties(errors) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 4);
    assert_eq!(errors[0].key, "systems.kafka.consumer.zookeeper.connect");
    assert!(
        err.to_string().starts_with(
            "line 4: systems.kafka.consumer.zookeeper.connect: is not a Cairn or Samza job \
             property; write `cairn.<field path>`"
        ),
        "{err}"
    );
}

#[test]
fn a_key_set_twice_is_an_error() {
    let errors = property_errors("job.name=a\ncairn.input.partitions=1\njob.name=b\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "line 3: job.name: is set twice (first on line 1); keep only one of the two lines"
    );
}

#[test]
fn parse_errors_match_yaml_and_point_at_the_line() {
    let base =
        "job.name=wc\ntask.class=count\ncairn.input.type=generator\ncairn.input.partitions=4\n";
    let err = JobSpec::from_properties_str(&format!("{base}cairn.paralelism=2\n")).unwrap_err();
    let SpecError::Parse { field, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(field, "paralelism");
    assert!(
        message.starts_with("unknown field `paralelism`, expected one of `name`"),
        "{message}"
    );
    assert!(
        message.ends_with("(line 5: `cairn.paralelism`)"),
        "{message}"
    );

    let err =
        JobSpec::from_properties_str(&format!("{base}cairn.checkpoint.interval=10 parsecs\n"))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint.interval: \"10 parsecs\" is not a duration; write e.g. \"10s\", \"500ms\" or \
         \"2m\" (line 5: `cairn.checkpoint.interval`)"
    );

    let err = JobSpec::from_properties_str(
        "job.name=wc\ntask.class=count\ncairn.input.type=kafkaa\ncairn.input.partitions=4\n",
    )
    .unwrap_err();
    let SpecError::Parse { field, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(field, "input.type");
    assert!(
        message
            .starts_with("unknown variant `kafkaa`, expected one of `generator`, `file`, `kafka`"),
        "{message}"
    );
}

#[test]
fn validation_errors_are_the_same_as_for_yaml() {
    let properties = "job.name=wc\ntask.class=count\ncairn.input.type=generator\n\
                      cairn.input.partitions=4\njob.container.count=6\n";
    let yaml =
        "name: wc\ntask: {name: count}\ninput: {type: generator, partitions: 4}\nparallelism: 6\n";
    let from_properties = JobSpec::from_properties_str(properties)
        .unwrap_err()
        .to_string();
    assert_eq!(
        from_properties,
        JobSpec::from_yaml_str(yaml).unwrap_err().to_string()
    );
    assert_eq!(
        from_properties,
        "parallelism: 6 is more than input.partitions (4); each container runs at least one \
         task, so lower parallelism or raise input.partitions"
    );
}

#[test]
fn from_path_reads_both_fixture_forms_to_the_same_spec() {
    let yaml = JobSpec::from_path(&fixture("wordcount.yaml")).unwrap();
    let properties = JobSpec::from_path(&fixture("wordcount.properties")).unwrap();
    assert_eq!(yaml, properties);
    assert_eq!(yaml.name, "wordcount");
    assert_eq!(yaml.parallelism, 2);
    assert_eq!(yaml.input.partitions(), 4);
    assert_eq!(yaml.checkpoint.interval, Duration::from_secs(30));
    assert_eq!(yaml.checkpoint.store, "file:///var/lib/cairn/checkpoints");
    assert_eq!(yaml.checkpoint.retained, 5);
    assert_eq!(yaml.state.cache_size, 128 << 20);
    assert_eq!(
        yaml.task.config.get("field"),
        Some(&serde_json::Value::from("word"))
    );
    assert_eq!(yaml.spec_hash(), properties.spec_hash());
}

#[test]
fn from_path_reports_unreadable_files() {
    let missing = fixture("no-such-job.yaml");
    let err = JobSpec::from_path(&missing).unwrap_err();
    let SpecError::Read { path, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &missing);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(err
        .to_string()
        .starts_with(&format!("cannot read job spec {}: ", missing.display())));
}
