# tests/stock.cmake — [slicing] policy = "stock" (FFN neurons pruned with the
# down projection refit; with split > 0 the global basis too).
# stock.llamacpp: tests/test_global_llamacpp.py --policy stock: the four shared
# models, the example and the hf-tiny RMSNorm families at params 0.8 (split 0;
# two Llamas also at 0.5), exported to GGUF; llama.cpp's NLL equals `slicepipe
# eval` of the output, and config.json's parameter counts equal the numel the
# files hold (label llamacpp; needs the gguf_npm fixture of tests/gguf.cmake).
add_test(NAME stock.llamacpp
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_llamacpp.py --slicepipe $<TARGET_FILE:slicepipe>
                 --shared ${SP_SHARED_DIR} --root ${CMAKE_SOURCE_DIR} --npm ${CMAKE_BINARY_DIR}/npm-gguf
                 --work ${CMAKE_BINARY_DIR}/stock_work --policy stock)
set_tests_properties(stock.llamacpp PROPERTIES FIXTURES_REQUIRED gguf_npm LABELS "llamacpp;gguf;stock"
                     SKIP_RETURN_CODE 77 TIMEOUT 600)
# stock.resume.*: a stock job (llama2xs, params 0.8) killed at every commit
# point of every stage, each rerun byte-identical (tests/test_global_resume.py
# SPLIT): split 0 (the MLPs cut, no survey) and split 0.5 (the survey too).
foreach(split 0 0.5)
  string(REPLACE "." "" tag ${split})
  add_test(NAME stock.resume.split${tag}
           COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_global_resume.py $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                   ${CMAKE_BINARY_DIR}/stock_resume${tag} ${split})
  set_tests_properties(stock.resume.split${tag} PROPERTIES LABELS "crash;stock" SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
# stock.split_auto: split = "auto" (tests/test_split_auto.py): the recorded
# held-back NLLs equal `slicepipe eval` of each candidate run by hand on the
# first windows, the lowest wins and its tensors equal a fixed-split run's; the
# run killed (SIGKILL) at 8 points over its wall time resumes byte-identical;
# --restart and a changed manifest measure again.
add_test(NAME stock.split_auto
         COMMAND ${SP_PYTHON} ${CMAKE_SOURCE_DIR}/tests/test_split_auto.py $<TARGET_FILE:slicepipe> ${SP_SHARED_DIR}
                 ${CMAKE_BINARY_DIR}/split_auto)
set_tests_properties(stock.split_auto PROPERTIES LABELS "crash;stock;numpy" SKIP_RETURN_CODE 77 TIMEOUT 300)
