// A user's program: checked by `tsc --noEmit` under NodeNext resolution with strict,
// noUncheckedIndexedAccess and exactOptionalPropertyTypes (see .ci/run). Never run.
import * as sm from "smelt";

const x = sm.array([[1, 2], [3, 4]], "float32");
const w = sm.fromBytes(new Float32Array([1, 0, 0, 1]), [2, 2], "float32");
const y = sm.softmax(sm.matmul(x, w).add(1), -1);
const values: number[] = y.toArray();
const first: number = y.sum().item();
const mask: boolean[] = sm.isclose(x, w).toArray<boolean>();
const floats: Float32Array = y.toFloat32Array();
const top = sm.topk(sm.sort(y.reshape([-1])), 2);
const parts: sm.Tensor[] = y.split(2, 0);
const c = sm.conv2d(sm.ones([1, 4, 4, 2]), sm.ones([3, 2, 2, 2]), [1, 1], 0);
const e = sm.einsum("ij,jk->ik", x, w);
const v = sm.var(x, null, false, 1);
const dtype: sm.DType = y.dtype;
const text: string = String(sm.tril(x));
await sm.asyncEval(top, c, e, v);
const data: number[] = await top.data();
console.log(values[0] ?? 0, first, mask, floats, parts.length, dtype, text, data, sm.stats().kernelsDispatched);
