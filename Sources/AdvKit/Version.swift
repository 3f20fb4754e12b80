/// AdvKit's version, in one place: `advkit --version` prints it, the evaluation's report states it, every JSON
/// file an evaluation writes records it (results.json and each unit of its journal), and the journal's key
/// includes it, so that a unit computed by another version is never reused.
public enum AdvKitVersion {
    public static let string = "0.3.0"
}
