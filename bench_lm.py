import asyncio, os, sys, time, subprocess, re
sys.path.insert(0, "/tmp/prof")
srv = subprocess.Popen([sys.executable, "-m", "rlm.testing.scripted_server", "--policy", "/tmp/prof/echo_policy.py:echo", "--port", "18777"], stdout=subprocess.PIPE, text=True)
line = srv.stdout.readline(); print(line.strip())
from rlm.config import RLMConfig
from rlm.lm import LiteLLMClient
cfg = RLMConfig(model="openai/scripted", api_base="http://127.0.0.1:18777/v1", api_key="sk")
c = LiteLLMClient(cfg)
N = int(os.environ.get("N", 1000))
async def main(n):
    gate = asyncio.Semaphore(64)
    async def one(i):
        async with gate:
            r = await c.acomplete([{"role": "user", "content": f"p{i}"}], role="sub")
            assert r.text == f"ans:p{i}", r.text
    await asyncio.gather(*(one(i) for i in range(n)))
c.run_async(main(50))
prof = os.environ.get("PROF")
if prof:
    import yappi; yappi.set_clock_type("cpu"); yappi.start()
t0 = time.perf_counter(); c0 = time.process_time()
c.run_async(main(N))
dt = time.perf_counter() - t0; dc = time.process_time() - c0
print(f"{N} calls: {dt:.2f}s wall, {N/dt:.0f}/s, {dc*1000/N:.2f} ms CPU/call")
if prof:
    yappi.stop(); st = yappi.get_func_stats(); st.sort("tsub"); st.print_all(columns={0:("name",90),1:("ncall",8),2:("tsub",8),3:("ttot",8)}, out=open("/tmp/prof/tsub.txt","w"))
    st.sort("ttot"); st.print_all(columns={0:("name",90),1:("ncall",8),2:("tsub",8),3:("ttot",8)}, out=open("/tmp/prof/ttot.txt","w"))
srv.terminate()
