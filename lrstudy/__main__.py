from lrstudy.gc_tuning import fewer_full_collections, skip_final_collection

fewer_full_collections()  # before the imports: they would trigger seconds of full collections
from lrstudy.cli import main  # noqa: E402

code = main()
skip_final_collection()  # the process ends here: no seconds-long final collection
raise SystemExit(code)
