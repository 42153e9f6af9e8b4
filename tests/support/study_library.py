"""A study's own library file (a concept and a word added to a shipped vocabulary), as the
mapping assistant's tests give it: through the CLI and through the workbench."""

STUDY_LIBRARY = """\
canonical: https://example.org/fhir/myeloma-study
concepts:
  bridging_note:
    label: Note on bridging therapy
    synonyms: [bridging]
    kind: observation
    value: {type: text}
value_sets:
  disease_status:
    sequencing_mrd_negative:
      text: Sequencing MRD-negative (IMWG 2016)
      synonyms: [MRD-neg NGS]
      within: complete_remission
      codings:
        - {system: snomed, code: "103338009", display: In full remission,
           source: mCODE ConditionStatusTrendMaxVS, verified: true}
        - {system: study, code: imwg-seq-mrd-neg, display: Sequencing MRD-negative,
           source: the study's own code, verified: true}
"""
